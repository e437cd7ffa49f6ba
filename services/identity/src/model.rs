//! Which model made an embedding, and the collection that holds that model's vectors: embeddings of
//! different models (or versions) live in different collections and are never compared.

use reid_proto::v1 as pb;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ModelKey {
    pub id: String,
    pub version: String,
    /// Embedding dimension; 0 when the sender did not say.
    pub dimension: usize,
}

impl From<&pb::ModelRef> for ModelKey {
    fn from(m: &pb::ModelRef) -> Self {
        Self { id: m.id.clone(), version: m.version.clone(), dimension: m.dimension as usize }
    }
}

impl ModelKey {
    pub fn to_proto(&self) -> pb::ModelRef {
        pb::ModelRef { id: self.id.clone(), version: self.version.clone(), dimension: self.dimension as u32 }
    }

    /// `<namespace>_<model id>_<hash of id and version>`: readable in Qdrant's dashboard, unique
    /// per version and namespace.
    pub fn collection(&self, namespace: &str) -> String {
        let slug: String = self
            .id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(40)
            .collect();
        let digest = Sha256::digest(format!("{}\0{}", self.id, self.version).as_bytes());
        let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("{namespace}_{slug}_{hash}")
    }

    /// Same model id and version. The dimension is not compared: a model version has one, and an
    /// embedding of another length is refused by its own check (`WrongDimension`), which says more.
    pub fn same_model(&self, other: &ModelKey) -> bool {
        self.id == other.id && self.version == other.version
    }
}

impl std::fmt::Display for ModelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_differ_per_version_and_are_plain_names() {
        let a = ModelKey { id: "MobileNetV2/ImageNet".into(), version: "1".into(), dimension: 1280 };
        let b = ModelKey { version: "2".into(), ..a.clone() };
        assert_ne!(a.collection("reid"), b.collection("reid"));
        assert!(a.collection("reid").starts_with("reid_mobilenetv2_imagenet_"));
        assert!(reid_vector_store::validate_name(&a.collection("reid")).is_ok());
        assert_eq!(a.collection("reid"), ModelKey { dimension: 7, ..a.clone() }.collection("reid"));
        assert!(a.collection("bench_7").starts_with("bench_7_mobilenetv2_imagenet_"));
    }
}
