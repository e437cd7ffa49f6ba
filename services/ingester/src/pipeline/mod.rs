//! What happens to a camera's frames: its [`view`] (region, scale, colour, clock), detection (the
//! [`crate::detect`] seam), the [`track`]er and its best crops, and the [`camera`]'s reader and
//! processing threads that run them, with the camera's status; the tracker tells people apart by
//! their [`appearance`] as well as by where they are.
//!
//! The pipeline takes its own settings ([`config`]: the camera, tracker, crops and reconnection); `crate::config` gathers them into the service's file, never the other
//! way round.

pub mod appearance;
pub mod camera;
pub(crate) mod config;
pub mod track;
pub mod view;
