//! What happens to a camera's frames: its [`view`] (region, scale, colour, clock), decoding
//! ([`frame`]), detection (the [`crate::detect`] seam), the [`track`]er and its best crops, and
//! the [`camera`]'s reader and processing threads that run them, with the camera's status.

pub mod camera;
pub mod frame;
pub mod track;
pub mod view;
