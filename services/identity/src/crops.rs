//! Stored crops, one folder per identity under `DATA/crops`: the enrollment images (kept so that
//! the gallery can be re-embedded when the model changes) and one thumbnail per observed
//! tracklet. `Forget` removes the folder; the TTL sweep removes expired thumbnails.

use std::path::{Path, PathBuf};

use prost::Message;
use reid_proto::v1::{Image, RawImage, image};

use crate::error::{IdentityError, IdentityResult};

pub(crate) const ENROLL_PREFIX: &str = "enroll-";
pub(crate) const SIGHTING_PREFIX: &str = "sighting-";

#[derive(Debug, Clone)]
pub struct CropStore {
    root: PathBuf,
}

/// Identity ids become folder names: only plain ones are accepted anywhere.
pub(crate) fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The bytes to store for an image, and the file extension that says how to read them back:
/// encoded images as they came, raw pixels as a protobuf `RawImage`.
pub(crate) fn stored_form(image: &Image) -> Option<(Vec<u8>, &'static str)> {
    match image.data.as_ref()? {
        image::Data::Encoded(bytes) => {
            let ext = match bytes.as_slice() {
                [0xFF, 0xD8, ..] => "jpg",
                [0x89, b'P', b'N', b'G', ..] => "png",
                [b'B', b'M', ..] => "bmp",
                [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "webp",
                _ => "img",
            };
            Some((bytes.clone(), ext))
        }
        image::Data::Raw(raw) => Some((raw.encode_to_vec(), "rawpb")),
    }
}

fn read_back(path: &Path, bytes: Vec<u8>) -> Option<Image> {
    let data = if path.extension().is_some_and(|e| e == "rawpb") {
        image::Data::Raw(RawImage::decode(bytes.as_slice()).ok()?)
    } else {
        image::Data::Encoded(bytes)
    };
    Some(Image { data: Some(data) })
}

impl CropStore {
    pub fn open(root: impl Into<PathBuf>) -> IdentityResult<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(IdentityError::crops(format!("creating {}", root.display())))?;
        Ok(Self { root })
    }

    pub fn dir(&self, identity: &str) -> PathBuf {
        self.root.join(identity)
    }

    /// Writes `stem.ext` atomically (a crash leaves the old file or the new one, never half).
    pub fn put(&self, identity: &str, stem: &str, image: &Image) -> IdentityResult<Option<String>> {
        let Some((bytes, ext)) = stored_form(image) else { return Ok(None) };
        let dir = self.dir(identity);
        std::fs::create_dir_all(&dir).map_err(IdentityError::crops(format!("creating {}", dir.display())))?;
        let name = format!("{stem}.{ext}");
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &bytes).map_err(IdentityError::crops(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join(&name)).map_err(IdentityError::crops(format!("renaming {}", tmp.display())))?;
        Ok(Some(name))
    }

    fn names(&self, identity: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir(identity)) else { return Vec::new() };
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with('.')).collect();
        names.sort();
        names
    }

    /// The enrollment images of an identity, by file name.
    pub fn enrollment_images(&self, identity: &str) -> Vec<(String, Image)> {
        self.names(identity)
            .into_iter()
            .filter(|n| n.starts_with(ENROLL_PREFIX))
            .filter_map(|n| {
                let path = self.dir(identity).join(&n);
                let image = read_back(&path, std::fs::read(&path).ok()?)?;
                Some((n, image))
            })
            .collect()
    }

    pub fn count(&self, identity: &str) -> usize {
        self.names(identity).len()
    }

    /// Removes one stored crop; true when it existed.
    pub fn remove(&self, identity: &str, name: &str) -> bool {
        is_plain_id(identity)
            && !name.contains(['/', '\\'])
            && std::fs::remove_file(self.dir(identity).join(name)).is_ok()
    }

    /// Removes every crop of an identity; returns how many there were.
    pub fn remove_identity(&self, identity: &str) -> IdentityResult<usize> {
        let n = self.count(identity);
        match std::fs::remove_dir_all(self.dir(identity)) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(IdentityError::crops(format!("removing crops of {identity}"))(e)),
        }
    }

    /// Moves the named crops (all when `names` is None) from one identity to another.
    pub fn move_crops(&self, from: &str, to: &str, names: Option<&[String]>) -> IdentityResult<usize> {
        let names = match names {
            Some(names) => names.to_vec(),
            None => self.names(from),
        };
        let target = self.dir(to);
        std::fs::create_dir_all(&target).map_err(IdentityError::crops(format!("creating {}", target.display())))?;
        let mut moved = 0;
        for name in names {
            if std::fs::rename(self.dir(from).join(&name), target.join(&name)).is_ok() {
                moved += 1;
            }
        }
        if self.names(from).is_empty() {
            let _ = std::fs::remove_dir(self.dir(from));
        }
        Ok(moved)
    }
}
