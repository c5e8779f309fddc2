//! Printing: the two output formats, aligned tables and `label  value`
//! blocks for people, and the [`Render`] trait every printable response
//! implements. Text that came from the server is stripped of control
//! characters here ([`clean`]) so that it can neither break the alignment nor
//! drive the terminal.

use std::io::{IsTerminal as _, Write as _};

use chrono::NaiveDate;
use clap::ValueEnum;
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use super::CliError;
use super::time;
use crate::domain::time::TimeZone;

/// The terminal width assumed when it cannot be measured.
pub const DEFAULT_WIDTH: usize = 80;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned, human-readable tables, times in the `--tz` zone.
    Table,
    /// JSON, for scripts.
    Json,
}

/// What a human-readable rendering may depend on.
#[derive(Debug, Clone)]
pub struct View {
    /// Times are shown in this zone.
    pub zone: TimeZone,
    /// Columns available.
    pub width: usize,
    /// Plain ASCII only (no emoji, no colours).
    pub ascii: bool,
    /// Today in `zone`.
    pub today: NaiveDate,
}

impl View {
    /// The view for standard output: its width when it is a terminal, and
    /// plain ASCII when it is not.
    pub fn for_stdout(zone: TimeZone) -> View {
        let width = terminal_size::terminal_size()
            .map(|(terminal_size::Width(width), _)| usize::from(width))
            .filter(|width| *width > 0)
            .unwrap_or(DEFAULT_WIDTH);
        View {
            zone,
            width,
            ascii: !std::io::stdout().is_terminal(),
            today: time::today(zone),
        }
    }
}

/// A response that can be printed in both formats.
pub trait Render {
    /// The machine-readable form.
    fn json(&self) -> serde_json::Value;
    /// The human-readable form (may end without a newline).
    fn table(&self, view: &View) -> String;
}

/// Prints `response` to stdout in `format`.
pub fn emit(format: OutputFormat, view: &View, response: &impl Render) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => print(&format!("{:#}", response.json())),
        OutputFormat::Table => print(&response.table(view)),
    }
}

/// Writes `text` and a final newline to stdout.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// `text` with every control character (newlines and escape sequences
/// included) replaced by a space.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Columns a text takes on a terminal.
pub fn width(text: &str) -> usize {
    text.width()
}

/// The longest prefix of `text` that fits in `columns`, never splitting a
/// wide character.
pub fn truncate(text: &str, columns: usize) -> &str {
    let mut used = 0;
    for (index, character) in text.char_indices() {
        let next = used + character.width().unwrap_or(0);
        if next > columns {
            return &text[..index];
        }
        used = next;
    }
    text
}

/// `text` cut to `columns`, ending in `ellipsis` when something was cut.
pub fn fit(text: &str, columns: usize, ellipsis: &str) -> String {
    if width(text) <= columns {
        return text.to_owned();
    }
    let room = columns.saturating_sub(width(ellipsis));
    if room == 0 {
        return truncate(text, columns).to_owned();
    }
    format!("{}{ellipsis}", truncate(text, room))
}

/// `text` followed by spaces up to `columns`.
pub fn pad(text: &str, columns: usize) -> String {
    let mut padded = text.to_owned();
    padded.extend(std::iter::repeat_n(
        ' ',
        columns.saturating_sub(width(text)),
    ));
    padded
}

/// Rows under headers, each column as wide as its widest cell, columns two
/// spaces apart.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers
                .into_iter()
                .map(|header| header.as_ref().to_owned())
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; its cells are cleaned of control characters.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(|cell| clean(cell.as_ref())).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, or `empty` when it has no rows.
    pub fn render_or(&self, empty: &str) -> String {
        if self.is_empty() {
            return empty.to_owned();
        }
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|header| width(header)).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate().take(columns) {
                widths[column] = widths[column].max(width(cell));
            }
        }
        let line = |cells: &[String]| {
            let text = cells
                .iter()
                .take(columns)
                .enumerate()
                .map(|(column, cell)| pad(cell, widths[column]))
                .collect::<Vec<_>>()
                .join("  ");
            text.trim_end().to_owned()
        };
        let mut lines = vec![line(&self.headers)];
        lines.extend(self.rows.iter().map(|row| line(row)));
        lines.join("\n")
    }
}

/// `label  value` lines with the values aligned; values are cleaned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let label_width = pairs
        .iter()
        .map(|(label, _)| width(label))
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(label, value)| {
            format!("{}  {}", pad(label, label_width), clean(value))
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `value`, or `-` when it is empty.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_display_width() {
        let mut table = Table::new(["ID", "PLATFORM", "NOTE"]);
        table.row(["1", "instagram", "📷 wide"]);
        table.row(["22", "x", ""]);
        table.row(["3", "line\nbreak", "tab\there"]);
        assert_eq!(
            table.render_or("none"),
            "ID  PLATFORM    NOTE\n\
             1   instagram   📷 wide\n\
             22  x\n\
             3   line break  tab here"
        );
        assert_eq!(Table::new(["A"]).render_or("No posts."), "No posts.");
    }

    #[test]
    fn fields_align_labels() {
        assert_eq!(
            fields(&[("ID", "abc".into()), ("Platform", "x".into())]),
            "ID        abc\nPlatform  x"
        );
    }

    #[test]
    fn truncation_never_splits_wide_characters() {
        assert_eq!(truncate("📷14:00", 1), "");
        assert_eq!(truncate("📷14:00", 3), "📷1");
        assert_eq!(fit("launch-week", 6, "…"), "launc…");
        assert_eq!(fit("launch", 6, "…"), "launch");
        assert_eq!(fit("launch", 1, "…"), "l");
        assert_eq!(pad("📷", 4), "📷  ");
    }
}
