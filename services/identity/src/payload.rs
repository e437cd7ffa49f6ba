//! The payloads of stored points. A gallery holds two kinds of point, typed here
//! ([`GalleryPoint`]: a tracklet's [`SightingPayload`] and an enrolled image's
//! [`EnrolledPayload`]); [`field`] is the one spelling of their field names that writes, reads,
//! filters and payload indexes share (the catalog filters by them too; its own records are typed
//! the same way in `catalog.rs`).

use reid_vector_store::Payload;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Field names of gallery points.
pub(crate) mod field {
    pub(crate) const KIND: &str = "kind";
    pub(crate) const IDENTITY: &str = "identity";
    /// Whether the point's identity is enrolled (on every point of an enrolled identity).
    pub(crate) const ENROLLED: &str = "enrolled";
    pub(crate) const CAMERA: &str = "camera";
    pub(crate) const TRACK: &str = "track";
    /// A sighting's start, ms since the epoch.
    pub(crate) const TIME: &str = "time";
    /// A sighting's end, ms since the epoch.
    pub(crate) const END: &str = "end";
    /// When a sighting was written, on the writing replica's clock (ms).
    pub(crate) const OBSERVED: &str = "observed";
    /// The identity a merge moved a point from.
    pub(crate) const MERGED_FROM: &str = "merged_from";
}

/// The `kind` of a tracklet's sighting.
pub(crate) const SIGHTING: &str = "sighting";
/// The `kind` of an enrolled image.
pub(crate) const ENROLLED: &str = "enrolled";

/// A gallery point's payload, told apart by its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum GalleryPoint {
    Sighting(SightingPayload),
    Enrolled(EnrolledPayload),
}

/// A tracklet seen by a camera and associated with an identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SightingPayload {
    pub identity: String,
    #[serde(default)]
    pub enrolled: bool,
    pub camera: String,
    pub track: String,
    #[serde(rename = "time")]
    pub start_ms: i64,
    #[serde(rename = "end")]
    pub end_ms: i64,
    /// Crops the tracklet's embedding was made of.
    #[serde(default)]
    pub crops: u64,
    /// The best crop's quality.
    #[serde(default)]
    pub quality: f32,
    /// The association's score and margin when the tracklet was observed.
    #[serde(default)]
    pub score: f32,
    #[serde(default)]
    pub margin: f32,
    #[serde(default)]
    pub model_version: String,
    /// Points written before replicas recorded it read 0: never concurrent with anything.
    #[serde(default)]
    pub observed: i64,
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// The best crop's thumbnail under the identity's crop folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
    /// The identity a merge moved this sighting from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
}

/// An enrolled image of an identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EnrolledPayload {
    pub identity: String,
    #[serde(default = "yes")]
    pub enrolled: bool,
    /// The stored image it was embedded from (absent for imported vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
}

fn yes() -> bool {
    true
}

impl GalleryPoint {
    /// The payload to store.
    pub(crate) fn to_payload(&self) -> Payload {
        object(serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// A stored payload read back (without copying it: every search hit goes through here);
    /// `None` for a point of another kind or shape.
    pub(crate) fn from_payload(p: &Payload) -> Option<Self> {
        Self::deserialize(p).ok()
    }

    pub(crate) fn sighting(self) -> Option<SightingPayload> {
        match self {
            GalleryPoint::Sighting(s) => Some(s),
            GalleryPoint::Enrolled(_) => None,
        }
    }
}

impl SightingPayload {
    /// A stored sighting read back; `None` for any other point.
    pub(crate) fn from_payload(p: &Payload) -> Option<Self> {
        GalleryPoint::from_payload(p).and_then(GalleryPoint::sighting)
    }
}

/// A payload of these fields, for `set_payload` on gallery points.
pub(crate) fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Payload {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A `json!({...})` object as a payload.
pub(crate) fn object(v: Value) -> Payload {
    match v {
        Value::Object(map) => map,
        _ => Payload::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_sighting_is_stored_under_the_field_names_filters_use() {
        let sighting = SightingPayload {
            identity: "id-1".into(),
            enrolled: false,
            camera: "west".into(),
            track: "7".into(),
            start_ms: 1000,
            end_ms: 4000,
            crops: 3,
            quality: 0.5,
            score: 0.75,
            margin: 0.25,
            model_version: "v2".into(),
            observed: 5000,
            bbox: Some([1.0, 2.0, 3.0, 4.0]),
            crop: None,
            merged_from: None,
        };
        let payload = GalleryPoint::Sighting(sighting.clone()).to_payload();
        assert_eq!(
            Value::Object(payload.clone()),
            json!({
                "kind": SIGHTING, "identity": "id-1", "enrolled": false, "camera": "west", "track": "7",
                "time": 1000, "end": 4000, "crops": 3, "quality": 0.5, "score": 0.75, "margin": 0.25,
                "model_version": "v2", "observed": 5000, "box": [1.0, 2.0, 3.0, 4.0],
            })
        );
        for key in [field::KIND, field::IDENTITY, field::ENROLLED, field::CAMERA, field::TRACK, field::TIME, field::END]
        {
            assert!(payload.contains_key(key), "{key}");
        }
        assert_eq!(SightingPayload::from_payload(&payload), Some(sighting));
    }

    #[test]
    fn older_and_other_points_read_as_what_they_are() {
        // Written before `observed` and `merged_from` existed.
        let old = object(json!({
            "kind": "sighting", "identity": "a", "enrolled": true, "camera": "c", "track": "t",
            "time": 1, "end": 2, "score": 0.9,
        }));
        let s = SightingPayload::from_payload(&old).unwrap();
        assert_eq!((s.observed, s.margin, s.crop.as_deref()), (0, 0.0, None));
        let enrolled = object(json!({ "kind": "enrolled", "identity": "b", "enrolled": true, "crop": "e1.jpg" }));
        let point = GalleryPoint::from_payload(&enrolled).unwrap();
        let expected =
            EnrolledPayload { identity: "b".into(), enrolled: true, crop: Some("e1.jpg".into()), merged_from: None };
        assert_eq!(point, GalleryPoint::Enrolled(expected));
        assert_eq!(point.sighting(), None);
        assert_eq!(SightingPayload::from_payload(&object(json!({ "kind": "feedback" }))), None);
    }
}
