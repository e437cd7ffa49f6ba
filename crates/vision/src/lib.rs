//! Images as every reid service handles them: what it checks before it decodes an image it was
//! sent, and the one decode and encode ([`decode`], [`encode_jpeg`]).
//!
//! A few hundred bytes of JPEG can declare 30000 x 30000 pixels, and a decoder allocates what the
//! header declares: 2.6 GB for one such image. So an encoded image's dimensions are read from its
//! header ([`header_dimensions`]) and checked against the caller's pixel limit *before* anything
//! is decoded, and decodes run a few at a time ([`DecodeSlots`]), so that the memory of decoding
//! is bounded by (slots x limit) whatever arrives at once.

mod codec;

use std::sync::{Condvar, Mutex};

pub use codec::{DecodeError, ImageInput, PixelFormat, decode, encode_jpeg};

/// The encodings reid decodes: those whose header states the image size.
pub const SUPPORTED: &str = "JPEG, PNG, BMP, WebP, TIFF, PNM";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("not a supported image ({SUPPORTED}) or a corrupt header")]
    Unreadable,
    #[error("{width}x{height} is larger than the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
}

/// The width and height an encoded image declares, read from its first bytes without decoding.
pub fn header_dimensions(bytes: &[u8]) -> Result<(u32, u32), HeaderError> {
    use imagesize::ImageType;
    let kind = imagesize::image_type(bytes).map_err(|_| HeaderError::Unreadable)?;
    if !matches!(
        kind,
        ImageType::Jpeg | ImageType::Png | ImageType::Bmp | ImageType::Webp | ImageType::Tiff | ImageType::Pnm
    ) {
        return Err(HeaderError::Unreadable);
    }
    let size = imagesize::blob_size(bytes).map_err(|_| HeaderError::Unreadable)?;
    let (w, h) = (u32::try_from(size.width), u32::try_from(size.height));
    match (w, h) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        (Ok(0), _) | (_, Ok(0)) => Err(HeaderError::Unreadable),
        _ => Err(HeaderError::TooLarge { width: u32::MAX, height: u32::MAX, limit: 0 }),
    }
}

/// Checks `width x height` against `limit` pixels.
pub fn check_pixels(width: u32, height: u32, limit: u64) -> Result<(), HeaderError> {
    if u64::from(width) * u64::from(height) > limit {
        return Err(HeaderError::TooLarge { width, height, limit });
    }
    Ok(())
}

/// The header's dimensions, refused when over `limit` pixels: what to call before decoding.
pub fn check_header(bytes: &[u8], limit: u64) -> Result<(u32, u32), HeaderError> {
    let (w, h) = header_dimensions(bytes)?;
    match check_pixels(w, h, limit) {
        Err(HeaderError::TooLarge { .. }) => Err(HeaderError::TooLarge { width: w, height: h, limit }),
        other => other.map(|()| (w, h)),
    }
}

/// A counting semaphore for blocking decode threads: at most `capacity` decodes at once.
#[derive(Debug)]
pub struct DecodeSlots {
    free: Mutex<usize>,
    released: Condvar,
}

impl DecodeSlots {
    pub const fn new(capacity: usize) -> Self {
        DecodeSlots { free: Mutex::new(capacity), released: Condvar::new() }
    }

    /// Runs `f` once a slot is free (blocking this thread until then).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            while *free == 0 {
                free = self.released.wait(free).unwrap_or_else(|e| e.into_inner());
            }
            *free -= 1;
        }
        struct Release<'a>(&'a DecodeSlots);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                self.0.released.notify_one();
            }
        }
        let _release = Release(self);
        f()
    }
}

/// The process's decode slots: four decodes at once (a 33 MP limit holds ~400 MB of pixels).
pub static DECODES: DecodeSlots = DecodeSlots::new(4);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A baseline JPEG header (SOI, then SOF0) declaring `width x height`, with no image data.
    fn jpeg_header(width: u16, height: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&width.to_be_bytes());
        b.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
        b
    }

    #[test]
    fn a_bomb_is_refused_from_its_header() {
        let bomb = jpeg_header(30_000, 30_000);
        assert_eq!(header_dimensions(&bomb), Ok((30_000, 30_000)));
        assert_eq!(
            check_header(&bomb, 33_177_600),
            Err(HeaderError::TooLarge { width: 30_000, height: 30_000, limit: 33_177_600 })
        );
        assert_eq!(check_header(&jpeg_header(640, 480), 33_177_600), Ok((640, 480)));
    }

    #[test]
    fn png_dimensions_come_from_ihdr() {
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R'];
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&7u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(header_dimensions(&png), Ok((100_000, 7)));
        assert!(matches!(check_header(&png, 100_000), Err(HeaderError::TooLarge { .. })));
    }

    #[test]
    fn unknown_or_truncated_headers_are_unreadable() {
        assert_eq!(header_dimensions(b"not an image"), Err(HeaderError::Unreadable));
        assert_eq!(header_dimensions(&[]), Err(HeaderError::Unreadable));
        assert_eq!(header_dimensions(&jpeg_header(640, 480)[..6]), Err(HeaderError::Unreadable));
        // GIF is a real format, but not one reid decodes.
        assert_eq!(header_dimensions(b"GIF89a\x10\x00\x10\x00\x00\x00\x00"), Err(HeaderError::Unreadable));
    }

    #[test]
    fn decode_slots_bound_concurrency() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SLOTS: DecodeSlots = DecodeSlots::new(2);
        let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    SLOTS.run(|| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    });
                });
            }
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
