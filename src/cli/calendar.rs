//! `punctual calendar`: a month (or a week) of posts drawn as a grid, one
//! column per weekday, each post as a platform mark and its local time:
//!
//! ```text
//!  October 2025 (Europe/Paris)
//!  Mon        Tue        Wed        Thu        Fri        Sat        Sun
//!                        1          2          3          4          5
//!                        I 14:00
//!  6          7          8          9          10         11         12
//!             F 09:00               X 11:00+
//!             L 15:00
//! ```
//!
//! The drawing is the pure function [`render_calendar`]: the columns share
//! the width given, a day's posts go on consecutive lines, today's number is
//! in brackets, and a post that is not simply pending carries a status sign
//! (`+` published, `!` failing or dead-lettered, `-` cancelled). In Unicode
//! mode platforms are emoji and the spill-over days of the neighbouring
//! months are dimmed; in ASCII mode platforms are letters and spill-over
//! days are left blank. The server computes the days (GetCalendar); this
//! module only draws them.

use chrono::{Datelike as _, NaiveDate};
use clap::{ArgGroup, Args};

use super::json;
use super::output::{self, Render, View, fit, pad, truncate, width};
use super::time::{parse_month, today};
use super::{CliError, CommonArgs, Session, WeekdayArg, weekday_label};
use crate::domain::time::{TimeZone, parse_local_date};
use crate::grpc::pb;
use pb::scheduled_post::Status;

/// Narrowest column: room for `[31]`.
const MIN_COLUMN: usize = 4;
/// Widest column, however wide the terminal.
const MAX_COLUMN: usize = 24;
/// Room a post's content id needs to be worth showing (a space and four
/// columns).
const MIN_CONTENT: usize = 5;
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("period").required(true).args(["month", "week"])))]
pub struct CalendarArgs {
    #[arg(long)]
    pub business: String,
    /// The month to draw, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM", value_parser = parse_month)]
    pub month: Option<(i32, u32)>,
    /// Draw the seven days from this date (YYYY-MM-DD) instead of a month.
    #[arg(long, value_name = "DATE")]
    pub week: Option<String>,
    /// First day of each week.
    #[arg(long, value_enum, default_value_t = WeekdayArg::Mon, value_name = "DAY")]
    pub week_start: WeekdayArg,
    /// Plain ASCII: letters for platforms, no colours (the default when
    /// stdout is not a terminal).
    #[arg(long)]
    pub ascii: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How [`render_calendar`] draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Columns available (the terminal's width).
    pub width: usize,
    /// Letters instead of emoji, no colours, spill-over days blank.
    pub ascii: bool,
    /// The day to mark as today, besides any the server flagged.
    pub today: Option<NaiveDate>,
    /// The first line, e.g. `October 2025 (Europe/Paris)`.
    pub title: String,
}

pub async fn calendar(session: &Session, args: CalendarArgs) -> Result<(), CliError> {
    use pb::get_calendar_request::View as Period;
    let zone = session.zone();
    let (year, month) = args.month.unwrap_or_default();
    let request = pb::GetCalendarRequest {
        business_id: args.business,
        year,
        month: i32::try_from(month).unwrap_or_default(),
        time_zone: zone.name().to_owned(),
        week_start: args.week_start.to_proto().into(),
        view: if args.week.is_some() {
            Period::Week
        } else {
            Period::Month
        }
        .into(),
        start_date: args.week.clone().unwrap_or_default(),
    };
    let calendar = session.client().get_calendar(request).await?.into_inner();
    // The calendar's own zone is the one its days are in.
    let calendar_zone = TimeZone::parse(&calendar.time_zone).unwrap_or(zone);
    let title = match &args.week {
        Some(start) => format!("Week of {start} ({calendar_zone})"),
        None => format!("{} ({calendar_zone})", month_title(year, month)),
    };
    let view = View {
        ascii: args.ascii || session.view().ascii,
        today: today(calendar_zone),
        ..session.view().clone()
    };
    output::emit(session.output(), &view, &Titled { calendar, title })
}

/// `October 2025`.
fn month_title(year: i32, month: u32) -> String {
    let name = usize::try_from(month)
        .ok()
        .and_then(|month| month.checked_sub(1))
        .and_then(|index| MONTHS.get(index))
        .copied()
        .unwrap_or("?");
    format!("{name} {year}")
}

/// A calendar with the title it is drawn under.
struct Titled {
    calendar: pb::Calendar,
    title: String,
}

impl Render for Titled {
    fn json(&self) -> serde_json::Value {
        json::message(&self.calendar)
    }

    fn table(&self, view: &View) -> String {
        render_calendar(
            &self.calendar,
            RenderOptions {
                width: view.width,
                ascii: view.ascii,
                today: Some(view.today),
                title: self.title.clone(),
            },
        )
    }
}

/// The kinds of platform that get their own mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Platform {
    Instagram,
    Facebook,
    LinkedIn,
    X,
    Other,
}

impl Platform {
    const ALL: [Platform; 5] = [
        Platform::Instagram,
        Platform::Facebook,
        Platform::LinkedIn,
        Platform::X,
        Platform::Other,
    ];

    fn of(name: &str) -> Platform {
        match name.trim().to_ascii_lowercase().as_str() {
            "instagram" => Platform::Instagram,
            "facebook" => Platform::Facebook,
            "linkedin" => Platform::LinkedIn,
            "x" | "twitter" => Platform::X,
            _ => Platform::Other,
        }
    }

    /// Two columns wide in both modes, so that times line up.
    fn mark(self, ascii: bool) -> &'static str {
        match (self, ascii) {
            (Platform::Instagram, true) => "I ",
            (Platform::Facebook, true) => "F ",
            (Platform::LinkedIn, true) => "L ",
            (Platform::X, true) => "X ",
            (Platform::Other, true) => "* ",
            (Platform::Instagram, false) => "📷",
            (Platform::Facebook, false) => "📘",
            (Platform::LinkedIn, false) => "💼",
            (Platform::X, false) => "✖ ",
            (Platform::Other, false) => "📱",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Platform::Instagram => "instagram",
            Platform::Facebook => "facebook",
            Platform::LinkedIn => "linkedin",
            Platform::X => "x",
            Platform::Other => "other",
        }
    }
}

/// The sign after a post's time, for posts that are not simply pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sign {
    Published,
    Failing,
    Cancelled,
}

impl Sign {
    const ALL: [Sign; 3] = [Sign::Published, Sign::Failing, Sign::Cancelled];

    fn of(status: i32) -> Option<Sign> {
        match Status::try_from(status).ok()? {
            Status::Published => Some(Sign::Published),
            Status::RetryScheduled | Status::DeadLettered => Some(Sign::Failing),
            Status::Cancelled | Status::Discarded => Some(Sign::Cancelled),
            Status::Scheduled | Status::Publishing | Status::Unspecified => None,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Sign::Published => "+",
            Sign::Failing => "!",
            Sign::Cancelled => "-",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Sign::Published => "published",
            Sign::Failing => "failed",
            Sign::Cancelled => "cancelled",
        }
    }
}

/// One cell of the grid: its text, and whether it is dimmed.
struct Cell {
    text: String,
    dim: bool,
}

/// Draws `calendar` as a grid of weeks; see the module documentation.
/// Never panics, whatever the calendar holds or however narrow `width` is.
pub fn render_calendar(calendar: &pb::Calendar, options: RenderOptions) -> String {
    let ascii = options.ascii;
    let column = (options.width / 7)
        .saturating_sub(1)
        .clamp(MIN_COLUMN, MAX_COLUMN);
    let mut lines = vec![format!(" {}", plain(&options.title, ascii))];

    let weekdays: Vec<i32> = match calendar.weeks.first() {
        Some(week) if !week.days.is_empty() => week.days.iter().map(|day| day.weekday).collect(),
        _ => (1..=7).collect(),
    };
    lines.push(grid_line(
        weekdays.iter().map(|weekday| Cell {
            text: weekday_label(*weekday).to_owned(),
            dim: false,
        }),
        column,
        ascii,
    ));

    let mut platforms = Vec::new();
    let mut signs = Vec::new();
    for week in &calendar.weeks {
        // In ASCII mode the neighbouring months' days are blank, posts too.
        let shown: Vec<(&pb::CalendarDay, &[pb::CalendarEntry])> = week
            .days
            .iter()
            .map(|day| {
                let entries: &[pb::CalendarEntry] = if ascii && !day.in_month {
                    &[]
                } else {
                    &day.entries
                };
                (day, entries)
            })
            .collect();
        lines.push(grid_line(
            shown.iter().map(|(day, _)| Cell {
                text: day_number(day, options.today, ascii),
                dim: !day.in_month,
            }),
            column,
            ascii,
        ));
        let height = shown
            .iter()
            .map(|(_, entries)| entries.len())
            .max()
            .unwrap_or(0);
        for line in 0..height {
            lines.push(grid_line(
                shown.iter().map(|(day, entries)| Cell {
                    text: entries
                        .get(line)
                        .map(|entry| entry_label(entry, column, ascii))
                        .unwrap_or_default(),
                    dim: !day.in_month,
                }),
                column,
                ascii,
            ));
        }
        for entry in shown.iter().flat_map(|(_, entries)| entries.iter()) {
            platforms.push(Platform::of(&entry.platform));
            signs.extend(Sign::of(entry.status));
        }
    }

    lines.push(String::new());
    lines.extend(legend(&platforms, &signs, options.width, ascii));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// One line of the grid: a margin, then the cells, one space apart.
fn grid_line(cells: impl Iterator<Item = Cell>, column: usize, ascii: bool) -> String {
    let mut line = String::new();
    for cell in cells {
        let text = truncate(&cell.text, column);
        line.push(' ');
        if cell.dim && !ascii && !text.is_empty() {
            line.push_str(DIM);
            line.push_str(text);
            line.push_str(RESET);
            line.push_str(&" ".repeat(column.saturating_sub(width(text))));
        } else {
            line.push_str(&pad(text, column));
        }
    }
    line.trim_end().to_owned()
}

/// The day of the month, `[15]` for today; blank for a spill-over day in
/// ASCII mode.
fn day_number(day: &pb::CalendarDay, today: Option<NaiveDate>, ascii: bool) -> String {
    if ascii && !day.in_month {
        return String::new();
    }
    let date = parse_local_date(&day.date).ok();
    let number = date.map_or_else(|| "?".to_owned(), |date| date.day().to_string());
    let is_today = day.is_today || (date.is_some() && date == today);
    if is_today {
        format!("[{number}]")
    } else {
        number
    }
}

/// `I 14:00`, its status sign, and the content id when the column has room.
fn entry_label(entry: &pb::CalendarEntry, column: usize, ascii: bool) -> String {
    let mut label = format!(
        "{}{}{}",
        Platform::of(&entry.platform).mark(ascii),
        plain(&entry.local_time, ascii),
        Sign::of(entry.status).map_or("", Sign::symbol)
    );
    let room = column.saturating_sub(width(&label));
    if room >= MIN_CONTENT && !entry.content_id.is_empty() {
        let ellipsis = if ascii { "~" } else { "…" };
        label.push(' ');
        label.push_str(&fit(&plain(&entry.content_id, ascii), room - 1, ellipsis));
    }
    label
}

/// What the marks and signs in use mean, wrapped to `width`.
fn legend(platforms: &[Platform], signs: &[Sign], width: usize, ascii: bool) -> Vec<String> {
    if platforms.is_empty() {
        return vec![" No posts.".to_owned()];
    }
    let items = Platform::ALL
        .iter()
        .filter(|platform| platforms.contains(platform))
        .map(|platform| format!("{} {}", platform.mark(ascii).trim_end(), platform.name()))
        .chain(
            Sign::ALL
                .iter()
                .filter(|sign| signs.contains(sign))
                .map(|sign| format!("{} {}", sign.symbol(), sign.meaning())),
        );
    let mut lines = Vec::new();
    let mut line = String::new();
    for item in items {
        if !line.is_empty() && output::width(&line) + 3 + output::width(&item) > width {
            lines.push(std::mem::take(&mut line));
        }
        line.push_str(if line.is_empty() { " " } else { "   " });
        line.push_str(&item);
    }
    lines.push(line);
    lines
}

/// Server text made safe to draw: no control characters, and in ASCII mode
/// `?` for anything beyond ASCII.
fn plain(text: &str, ascii: bool) -> String {
    let cleaned = output::clean(text);
    if ascii {
        cleaned
            .chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Weekday;

    /// October 2025 as the server sends it for Europe/Paris, weeks from
    /// Monday: 29 September to 2 November.
    fn october_2025(entries: &[(&str, &str, &str, Status, &str)]) -> pb::Calendar {
        let first = NaiveDate::from_ymd_opt(2025, 9, 29).unwrap();
        let weeks = (0..5)
            .map(|week| pb::CalendarWeek {
                days: (0..7)
                    .map(|offset| {
                        let date = first + chrono::Days::new(week * 7 + offset);
                        let text = date.format("%Y-%m-%d").to_string();
                        pb::CalendarDay {
                            weekday: match date.weekday() {
                                Weekday::Mon => pb::DayOfWeek::Monday,
                                Weekday::Tue => pb::DayOfWeek::Tuesday,
                                Weekday::Wed => pb::DayOfWeek::Wednesday,
                                Weekday::Thu => pb::DayOfWeek::Thursday,
                                Weekday::Fri => pb::DayOfWeek::Friday,
                                Weekday::Sat => pb::DayOfWeek::Saturday,
                                Weekday::Sun => pb::DayOfWeek::Sunday,
                            }
                            .into(),
                            in_month: date.month() == 10,
                            is_today: false,
                            entries: entries
                                .iter()
                                .filter(|(day, ..)| *day == text)
                                .map(|(_, time, platform, status, content)| pb::CalendarEntry {
                                    id: format!("id-{text}-{time}"),
                                    local_time: (*time).to_owned(),
                                    platform: (*platform).to_owned(),
                                    status: (*status).into(),
                                    content_id: (*content).to_owned(),
                                    scheduled_for: None,
                                    ..Default::default()
                                })
                                .collect(),
                            date: text,
                        }
                    })
                    .collect(),
            })
            .collect();
        pb::Calendar {
            time_zone: "Europe/Paris".into(),
            first_date: "2025-09-29".into(),
            last_date: "2025-11-02".into(),
            weeks,
        }
    }

    fn sample() -> pb::Calendar {
        october_2025(&[
            ("2025-09-30", "10:00", "facebook", Status::Published, "sept"),
            (
                "2025-10-01",
                "14:00",
                "instagram",
                Status::Scheduled,
                "launch",
            ),
            (
                "2025-10-07",
                "09:00",
                "facebook",
                Status::Scheduled,
                "teaser",
            ),
            (
                "2025-10-07",
                "15:00",
                "linkedin",
                Status::Scheduled,
                "hiring",
            ),
            ("2025-10-09", "11:00", "x", Status::Published, "thread"),
            (
                "2025-10-15",
                "18:30",
                "tiktok",
                Status::DeadLettered,
                "dance",
            ),
            (
                "2025-10-31",
                "09:00",
                "instagram",
                Status::Scheduled,
                "costume",
            ),
            (
                "2025-10-31",
                "12:00",
                "instagram",
                Status::Cancelled,
                "pumpkin",
            ),
            (
                "2025-10-31",
                "17:45",
                "facebook",
                Status::Scheduled,
                "party",
            ),
            (
                "2025-11-01",
                "08:00",
                "linkedin",
                Status::Scheduled,
                "november",
            ),
        ])
    }

    fn options(width: usize, ascii: bool) -> RenderOptions {
        RenderOptions {
            width,
            ascii,
            today: NaiveDate::from_ymd_opt(2025, 10, 15),
            title: "October 2025 (Europe/Paris)".into(),
        }
    }

    #[test]
    fn october_2025_in_ascii_at_80_columns() {
        let expected = concat!(
            " October 2025 (Europe/Paris)\n",
            " Mon        Tue        Wed        Thu        Fri        Sat        Sun\n",
            "                       1          2          3          4          5\n",
            "                       I 14:00\n",
            " 6          7          8          9          10         11         12\n",
            "            F 09:00               X 11:00+\n",
            "            L 15:00\n",
            " 13         14         [15]       16         17         18         19\n",
            "                       * 18:30!\n",
            " 20         21         22         23         24         25         26\n",
            " 27         28         29         30         31\n",
            "                                             I 09:00\n",
            "                                             I 12:00-\n",
            "                                             F 17:45\n",
            "\n",
            " I instagram   F facebook   L linkedin   X x   * other   + published   ! failed\n",
            " - cancelled\n",
        );
        assert_eq!(render_calendar(&sample(), options(80, true)), expected);
    }

    #[test]
    fn unicode_mode_uses_marks_and_dims_other_months() {
        let text = render_calendar(&sample(), options(80, false));
        for mark in ["📷14:00", "📘09:00", "💼15:00", "✖ 11:00+", "📱18:30!"] {
            assert!(text.contains(mark), "{mark} missing in\n{text}");
        }
        // 30 September and 1 November are shown, dimmed, posts included.
        assert!(text.contains(&format!("{DIM}30{RESET}")), "{text}");
        assert!(text.contains(&format!("{DIM}📘10:00+{RESET}")), "{text}");
        assert!(text.contains(&format!("{DIM}💼08:00{RESET}")), "{text}");
        assert!(text.contains("📷 instagram"), "{text}");
        // No letters for platforms.
        assert!(!text.contains("I 14:00"), "{text}");
    }

    #[test]
    fn ascii_output_is_ascii() {
        let mut calendar = sample();
        calendar.weeks[1].days[0].entries.push(pb::CalendarEntry {
            local_time: "10:00".into(),
            platform: "instagram".into(),
            content_id: "café\u{1b}[31m".into(),
            ..Default::default()
        });
        for width in [40, 80, 200] {
            let text = render_calendar(&calendar, options(width, true));
            assert!(text.is_ascii(), "{text}");
            assert!(!text.contains('\u{1b}'), "{text}");
        }
    }

    #[test]
    fn wide_terminals_show_content_ids() {
        let text = render_calendar(&sample(), options(140, true));
        // 140 columns: cells of 19, room for the content id after the time.
        assert!(text.contains(" I 14:00 launch"), "{text}");
        assert!(text.contains("I 12:00- pumpkin"), "{text}");
        let text = render_calendar(&sample(), options(120, false));
        assert!(text.contains("📷14:00 launch"), "{text}");
    }

    #[test]
    fn narrow_widths_render_without_panicking() {
        for width in [0, 1, 7, 20, 35, 49] {
            for ascii in [true, false] {
                let text = render_calendar(&sample(), options(width, ascii));
                assert!(text.contains("October 2025"), "{text}");
                // Every day of the month is still numbered.
                assert!(text.contains(" 31"), "{width}: {text}");
            }
        }
        let text = render_calendar(&sample(), options(20, true));
        // Columns of four: marks and times are cut, never split mid-character.
        assert!(text.contains(" I 14"), "{text}");
        let text = render_calendar(&sample(), options(20, false));
        assert!(text.contains(" 📷14"), "{text}");
    }

    #[test]
    fn odd_calendars_do_not_panic() {
        let empty = pb::Calendar::default();
        let text = render_calendar(&empty, options(80, true));
        assert_eq!(
            text,
            " October 2025 (Europe/Paris)\n Mon        Tue        Wed        Thu        Fri        Sat        Sun\n\n No posts.\n"
        );
        let broken = pb::Calendar {
            weeks: vec![pb::CalendarWeek {
                days: vec![pb::CalendarDay {
                    date: "not a date".into(),
                    weekday: 42,
                    in_month: true,
                    is_today: true,
                    entries: vec![pb::CalendarEntry {
                        local_time: "\u{7}99:99 very long text".into(),
                        status: -3,
                        ..Default::default()
                    }],
                }],
            }],
            ..Default::default()
        };
        let text = render_calendar(&broken, options(80, false));
        assert!(text.contains("[?]"), "{text}");
    }

    #[test]
    fn sunday_first_weeks_follow_the_server() {
        let mut calendar = sample();
        for week in &mut calendar.weeks {
            week.days.rotate_right(1);
        }
        let text = render_calendar(&calendar, options(80, true));
        assert!(text.contains(" Sun        Mon        Tue"), "{text}");
    }

    #[test]
    fn month_titles() {
        assert_eq!(month_title(2025, 10), "October 2025");
        assert_eq!(month_title(2025, 0), "? 2025");
        assert_eq!(month_title(2025, 13), "? 2025");
    }
}
