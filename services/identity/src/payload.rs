//! Reading and writing the JSON payloads of stored points.

use reid_vector_store::Payload;
use serde_json::Value;

pub fn str_of(p: &Payload, key: &str) -> Option<String> {
    p.get(key).and_then(Value::as_str).map(str::to_owned)
}

pub fn int_of(p: &Payload, key: &str) -> Option<i64> {
    p.get(key).and_then(Value::as_i64)
}

pub fn float_of(p: &Payload, key: &str) -> f32 {
    p.get(key).and_then(Value::as_f64).unwrap_or(0.0) as f32
}

/// A `json!({...})` object as a payload.
pub fn object(v: Value) -> Payload {
    match v {
        Value::Object(map) => map,
        _ => Payload::new(),
    }
}
