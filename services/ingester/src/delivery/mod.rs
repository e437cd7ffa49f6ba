//! Where finished tracklets go: the outbox and the worker that embeds and observes them
//! ([`deliver`]), and tracklets written out as training data ([`export`]).

pub(crate) mod config;
pub mod deliver;
pub mod export;
