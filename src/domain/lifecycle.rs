//! The life cycle of a post: every way its status may change, in one type.
//!
//! A [`Transition`] says from which statuses it may start, which status it
//! leads to and which event announces it. Nothing else decides a status:
//! the service and the engine name the transition they make, storage writes
//! it as a compare-and-set against [`Transition::sources`], and the event
//! bus moves the queue counters from the status the post left.
//!
//! ```text
//! (new) ─Create─► SCHEDULED ◄─────────────────────────── Requeue ─┐
//!                   │  ▲ Edit (new instant)                      │
//!             Claim │  │ GiveBack / Recover                      │
//!                   ▼  │                                         │
//!   PUBLISHED ◄Publish─ PUBLISHING ─Retry─► RETRY_SCHEDULED      │
//!                       │        └─GiveUp / Miss─► DEAD_LETTERED ┘─Discard─► DISCARDED
//! SCHEDULED, RETRY_SCHEDULED, DEAD_LETTERED ─Cancel─► CANCELLED
//! ```

use std::fmt;

use super::PostStatus;

/// What happened to a post, as watchers of the event stream see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Scheduled,
    Updated,
    Cancelled,
    Publishing,
    Published,
    RetryScheduled,
    DeadLettered,
    Discarded,
}

impl EventKind {
    pub const ALL: [EventKind; 8] = [
        EventKind::Scheduled,
        EventKind::Updated,
        EventKind::Cancelled,
        EventKind::Publishing,
        EventKind::Published,
        EventKind::RetryScheduled,
        EventKind::DeadLettered,
        EventKind::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scheduled => "scheduled",
            EventKind::Updated => "updated",
            EventKind::Cancelled => "cancelled",
            EventKind::Publishing => "publishing",
            EventKind::Published => "published",
            EventKind::RetryScheduled => "retry_scheduled",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Discarded => "discarded",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == input)
    }
}

/// Every change of a post's status (or, for [`Transition::Edit`] and
/// [`Transition::RunNow`], of a pending post that stays pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A caller schedules a new post.
    Create,
    /// A caller changes a pending post; a new instant is a fresh start, so
    /// a retrying post becomes `SCHEDULED` again with no attempts.
    Edit { new_instant: bool },
    /// A caller moves a pending post's next attempt to now.
    RunNow,
    /// A caller cancels a post that has not been published.
    Cancel,
    /// The engine claims a due post to publish it.
    Claim,
    /// The engine hands a claim back uncounted (a pause raced the claim, a
    /// rate limit defers it).
    GiveBack,
    /// A restart, or the new owner of a partition, returns an interrupted
    /// attempt to pending, uncounted.
    Recover,
    /// The publisher accepted the post.
    Publish,
    /// An attempt failed and another follows.
    Retry,
    /// The last attempt failed, or the publisher refused the post.
    GiveUp,
    /// The post was claimed later than the missed-fire window allows.
    Miss,
    /// A resume keeps a post whose instant passed during the pause for
    /// review.
    HoldForReview,
    /// A resume skips a post whose instant passed during the pause.
    Skip,
    /// A caller schedules a dead letter again, with fresh attempts.
    Requeue,
    /// A caller takes a dead letter out of review for good.
    Discard,
}

use PostStatus::{
    Cancelled, DeadLettered, Discarded, Published, Publishing, RetryScheduled, Scheduled,
};

impl Transition {
    /// Every transition, with each variant's fields in every combination.
    pub const ALL: [Transition; 16] = [
        Transition::Create,
        Transition::Edit { new_instant: false },
        Transition::Edit { new_instant: true },
        Transition::RunNow,
        Transition::Cancel,
        Transition::Claim,
        Transition::GiveBack,
        Transition::Recover,
        Transition::Publish,
        Transition::Retry,
        Transition::GiveUp,
        Transition::Miss,
        Transition::HoldForReview,
        Transition::Skip,
        Transition::Requeue,
        Transition::Discard,
    ];

    /// The statuses the post may be in for the transition to apply; empty
    /// for [`Transition::Create`], whose post does not exist yet.
    pub fn sources(self) -> &'static [PostStatus] {
        match self {
            Transition::Create => &[],
            Transition::Edit { .. }
            | Transition::RunNow
            | Transition::Claim
            | Transition::HoldForReview
            | Transition::Skip => &PostStatus::PENDING,
            Transition::Cancel => &[Scheduled, RetryScheduled, DeadLettered],
            Transition::GiveBack
            | Transition::Recover
            | Transition::Publish
            | Transition::Retry
            | Transition::GiveUp
            | Transition::Miss => &[Publishing],
            Transition::Requeue | Transition::Discard => &[DeadLettered],
        }
    }

    /// Whether the transition may start from `status`.
    pub fn allows(self, status: PostStatus) -> bool {
        self.sources().contains(&status)
    }

    /// The status the post has afterwards, coming from `from` with
    /// `attempts` attempts counted afterwards.
    pub fn target(self, from: PostStatus, attempts: u32) -> PostStatus {
        match self {
            Transition::Create | Transition::Requeue => Scheduled,
            Transition::Edit { new_instant: true } => Scheduled,
            Transition::Edit { new_instant: false } | Transition::RunNow => from,
            Transition::Cancel | Transition::Skip => Cancelled,
            Transition::Claim => Publishing,
            Transition::GiveBack | Transition::Recover => PostStatus::pending_after(attempts),
            Transition::Publish => Published,
            Transition::Retry => RetryScheduled,
            Transition::GiveUp | Transition::Miss | Transition::HoldForReview => DeadLettered,
            Transition::Discard => Discarded,
        }
    }

    /// How the attempt count changes: `None` leaves it, otherwise the new
    /// count from the old one.
    pub fn attempts_after(self, attempts: u32) -> Option<u32> {
        match self {
            Transition::Claim => Some(attempts.saturating_add(1)),
            // A claim handed back, interrupted or missed is not an attempt.
            Transition::GiveBack | Transition::Recover | Transition::Miss => {
                Some(attempts.saturating_sub(1))
            }
            Transition::Edit { new_instant: true } | Transition::Requeue | Transition::Create => {
                Some(0)
            }
            _ => None,
        }
    }

    /// The event that announces it to watchers, and moves the queue
    /// counters. `None` for a transition nobody outside sees: a claim is
    /// announced as `PUBLISHING` only when its attempt starts, so a claim
    /// given back or recovered never moved the counters.
    pub fn event(self) -> Option<EventKind> {
        match self {
            Transition::Create | Transition::Requeue => Some(EventKind::Scheduled),
            Transition::Edit { .. } | Transition::RunNow => Some(EventKind::Updated),
            Transition::Cancel | Transition::Skip => Some(EventKind::Cancelled),
            Transition::Claim | Transition::GiveBack | Transition::Recover => None,
            Transition::Publish => Some(EventKind::Published),
            Transition::Retry => Some(EventKind::RetryScheduled),
            Transition::GiveUp | Transition::Miss | Transition::HoldForReview => {
                Some(EventKind::DeadLettered)
            }
            Transition::Discard => Some(EventKind::Discarded),
        }
    }

    /// Whether the write must also hold the claim's partition lease: every
    /// transition that ends or hands back a claim, so that a replica that
    /// lost the partition cannot overwrite its new owner's work.
    pub fn is_fenced(self) -> bool {
        matches!(
            self,
            Transition::GiveBack
                | Transition::Publish
                | Transition::Retry
                | Transition::GiveUp
                | Transition::Miss
        )
    }

    /// Who makes the transition, for the documentation's table.
    pub fn made_by(self) -> &'static str {
        match self {
            Transition::Create => "CreateSchedule, BulkSchedule",
            Transition::Edit { .. } => "UpdateSchedule",
            Transition::RunNow => "RunNow",
            Transition::Cancel => "CancelSchedule",
            Transition::Claim => "the engine, at the instant (minus the claim lead)",
            Transition::GiveBack => "the engine, when a pause or a rate limit defers a claim",
            Transition::Recover => "a restart, or the new owner of a partition",
            Transition::Publish => "the publisher's 2xx",
            Transition::Retry => "a retryable failure with attempts left",
            Transition::GiveUp => "the last attempt failing, or the publisher refusing",
            Transition::Miss => "a claim later than the missed-fire window",
            Transition::HoldForReview => "ResumeQueue with KEEP_FOR_REVIEW",
            Transition::Skip => "ResumeQueue with SKIP",
            Transition::Requeue => "RequeueDeadLetter",
            Transition::Discard => "DiscardDeadLetter",
        }
    }

    /// The documentation's table of transitions, in markdown, generated from
    /// the type so that it cannot drift from it.
    pub fn markdown_table() -> String {
        let mut table = String::from(
            "| Transition | From | To | Event | Made by |\n| --- | --- | --- | --- | --- |\n",
        );
        for transition in Self::ALL {
            let from = if transition.sources().is_empty() {
                "(new post)".to_owned()
            } else {
                transition
                    .sources()
                    .iter()
                    .map(|status| format!("`{status}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let to = match transition {
                Transition::Edit { new_instant: false } | Transition::RunNow => {
                    "unchanged".to_owned()
                }
                Transition::GiveBack | Transition::Recover => {
                    "`SCHEDULED` (no attempt counted yet) or `RETRY_SCHEDULED`".to_owned()
                }
                other => format!("`{}`", other.target(Scheduled, 0)),
            };
            let event = match (transition, transition.event()) {
                (Transition::Claim, _) => "`publishing`, when its attempt starts".to_owned(),
                (_, Some(kind)) => format!("`{}`", kind.as_str()),
                (_, None) => "none".to_owned(),
            };
            table.push_str(&format!(
                "| {transition} | {from} | {to} | {event} | {} |\n",
                transition.made_by()
            ));
        }
        table
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Transition::Create => "Create",
            Transition::Edit { new_instant: false } => "Edit",
            Transition::Edit { new_instant: true } => "Edit (new instant)",
            Transition::RunNow => "RunNow",
            Transition::Cancel => "Cancel",
            Transition::Claim => "Claim",
            Transition::GiveBack => "GiveBack",
            Transition::Recover => "Recover",
            Transition::Publish => "Publish",
            Transition::Retry => "Retry",
            Transition::GiveUp => "GiveUp",
            Transition::Miss => "Miss",
            Transition::HoldForReview => "HoldForReview",
            Transition::Skip => "Skip",
            Transition::Requeue => "Requeue",
            Transition::Discard => "Discard",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (from, to) pair the life cycle allows, written out by hand: the
    /// type must produce exactly these.
    const LEGAL: [(PostStatus, PostStatus); 20] = [
        (Scheduled, Scheduled),
        (RetryScheduled, RetryScheduled),
        (RetryScheduled, Scheduled),
        (Scheduled, Publishing),
        (RetryScheduled, Publishing),
        (Publishing, Scheduled),
        (Publishing, RetryScheduled),
        (Publishing, Published),
        (Publishing, DeadLettered),
        (Scheduled, Cancelled),
        (RetryScheduled, Cancelled),
        (DeadLettered, Cancelled),
        (Scheduled, DeadLettered),
        (RetryScheduled, DeadLettered),
        (DeadLettered, Scheduled),
        (DeadLettered, Discarded),
        // Edit with a new instant of a SCHEDULED post, RunNow: stay.
        (Scheduled, Scheduled),
        (RetryScheduled, RetryScheduled),
        // GiveBack and Recover of a first attempt, and of a later one.
        (Publishing, Scheduled),
        (Publishing, RetryScheduled),
    ];

    fn produced() -> Vec<(PostStatus, PostStatus)> {
        let mut pairs = Vec::new();
        for transition in Transition::ALL {
            for from in PostStatus::ALL {
                if !transition.allows(from) {
                    continue;
                }
                for attempts in [0, 1, 2] {
                    pairs.push((from, transition.target(from, attempts)));
                }
            }
        }
        pairs.sort_by_key(|(from, to)| (from.as_str(), to.as_str()));
        pairs.dedup();
        pairs
    }

    #[test]
    fn every_transition_leads_only_to_a_legal_status() {
        let mut legal = LEGAL.to_vec();
        legal.sort_by_key(|(from, to)| (from.as_str(), to.as_str()));
        legal.dedup();
        assert_eq!(produced(), legal);
    }

    #[test]
    fn no_transition_leaves_a_final_status() {
        for transition in Transition::ALL {
            for status in [Published, Cancelled, Discarded] {
                assert!(!transition.allows(status), "{transition} from {status}");
            }
        }
    }

    #[test]
    fn illegal_starts_are_refused() {
        // A sample of what must never happen, each named.
        let illegal = [
            (Transition::Claim, Publishing),
            (Transition::Claim, DeadLettered),
            (Transition::Publish, Scheduled),
            (Transition::Retry, RetryScheduled),
            (Transition::Requeue, Scheduled),
            (Transition::Discard, Cancelled),
            (Transition::Cancel, Publishing),
            (Transition::Edit { new_instant: true }, DeadLettered),
            (Transition::RunNow, Publishing),
            (Transition::Recover, Scheduled),
            (Transition::Create, Scheduled),
        ];
        for (transition, from) in illegal {
            assert!(!transition.allows(from), "{transition} from {from}");
        }
        // And the whole table: a transition allows exactly its sources.
        for transition in Transition::ALL {
            for status in PostStatus::ALL {
                assert_eq!(
                    transition.allows(status),
                    transition.sources().contains(&status)
                );
            }
        }
    }

    #[test]
    fn claims_count_attempts_and_hand_backs_uncount_them() {
        assert_eq!(Transition::Claim.attempts_after(0), Some(1));
        assert_eq!(Transition::GiveBack.attempts_after(1), Some(0));
        assert_eq!(Transition::GiveBack.target(Publishing, 0), Scheduled);
        assert_eq!(Transition::Recover.target(Publishing, 2), RetryScheduled);
        assert_eq!(Transition::Miss.attempts_after(1), Some(0));
        assert_eq!(Transition::Requeue.attempts_after(4), Some(0));
        assert_eq!(Transition::Publish.attempts_after(3), None);
    }

    #[test]
    fn only_claim_ending_writes_are_fenced() {
        for transition in Transition::ALL {
            let ends_a_claim = transition.sources() == [Publishing];
            let fenced_by_takeover = transition == Transition::Recover;
            assert_eq!(
                transition.is_fenced(),
                ends_a_claim && !fenced_by_takeover,
                "{transition}"
            );
        }
    }

    #[test]
    fn event_names_read_back() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("exploded"), None);
    }

    #[test]
    fn the_api_docs_show_the_table_of_this_type() {
        let docs = include_str!("../../docs/api.md");
        let table = Transition::markdown_table();
        assert!(
            docs.contains(&table),
            "docs/api.md must hold the table of transitions exactly as generated:\n{table}"
        );
    }
}
