//! The domain: what a scheduled post is, its life cycle, and how wall-clock
//! times in IANA zones become instants. Nothing here knows of gRPC, SQL or
//! HTTP; the other layers convert to and from these types.

pub mod calendar;
pub mod error;
pub mod labels;
pub mod lifecycle;
pub mod payload;
pub mod post;
pub mod recurrence;
pub mod slots;
pub mod suggest;
pub mod time;

pub use error::*;
pub use labels::*;
pub use lifecycle::{EventKind, Transition};
pub use payload::*;
pub use post::*;
