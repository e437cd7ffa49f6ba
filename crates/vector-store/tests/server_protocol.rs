#![allow(clippy::unwrap_used)]
//! The server backend's side of Qdrant's protocol, against a scripted Qdrant on 127.0.0.1:0 (no
//! real server can be downloaded where reid is built; `scripts/qdrant-conformance.sh` runs the
//! conformance suite against one you have). What is scripted is what Qdrant does: its health
//! check needs no key while every other call does, a missing collection is NOT_FOUND with
//! ``Collection `X` doesn't exist!``, and the optimiser reports grey (pending), yellow (running)
//! and green (done).

use std::sync::{Arc, Mutex};

use qdrant_client::qdrant::collections_server::{Collections, CollectionsServer};
use qdrant_client::qdrant::qdrant_server::{Qdrant, QdrantServer};
use qdrant_client::qdrant::{
    ChangeAliases, CollectionClusterInfoRequest, CollectionClusterInfoResponse, CollectionExistsRequest,
    CollectionExistsResponse, CollectionInfo, CollectionOperationResponse, CollectionStatus, CreateCollection,
    CreateShardKeyRequest, CreateShardKeyResponse, DeleteCollection, DeleteShardKeyRequest, DeleteShardKeyResponse,
    GetCollectionInfoRequest, GetCollectionInfoResponse, HealthCheckReply, HealthCheckRequest, ListAliasesRequest,
    ListAliasesResponse, ListCollectionAliasesRequest, ListCollectionsRequest, ListCollectionsResponse,
    ListShardKeysRequest, ListShardKeysResponse, UpdateCollection, UpdateCollectionClusterSetupRequest,
    UpdateCollectionClusterSetupResponse,
};
use reid_vector_store::{QdrantServerStore, ServerOptions, StoreError, VectorStore};
use tonic::{Request, Response, Status};

const KEY: &str = "the-right-key";

#[derive(Default)]
struct Script {
    /// Statuses `collection_info` of "indexing" answers in turn; the last one stays.
    statuses: Vec<CollectionStatus>,
    infos: usize,
    updates: usize,
}

#[derive(Clone, Default)]
struct FakeQdrant(Arc<Mutex<Script>>);

fn authorised<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("api-key").and_then(|v| v.to_str().ok()) {
        Some(KEY) => Ok(()),
        Some(_) => Err(Status::permission_denied("Invalid api-key")),
        None => Err(Status::unauthenticated("Must provide an API key or an Authorization bearer token")),
    }
}

#[tonic::async_trait]
impl Qdrant for FakeQdrant {
    async fn health_check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckReply>, Status> {
        Ok(Response::new(HealthCheckReply {
            title: "qdrant (scripted)".into(),
            version: "1.19.0".into(),
            commit: None,
        }))
    }
}

fn unscripted<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not scripted"))
}

#[tonic::async_trait]
impl Collections for FakeQdrant {
    async fn get(&self, r: Request<GetCollectionInfoRequest>) -> Result<Response<GetCollectionInfoResponse>, Status> {
        authorised(&r)?;
        let name = r.into_inner().collection_name;
        if name != "indexing" {
            return Err(Status::not_found(format!("Not found: Collection `{name}` doesn't exist!")));
        }
        let mut script = self.0.lock().unwrap();
        let status = script.statuses[script.infos.min(script.statuses.len() - 1)];
        script.infos += 1;
        let info = CollectionInfo { status: status as i32, points_count: Some(10), ..Default::default() };
        Ok(Response::new(GetCollectionInfoResponse { result: Some(info), time: 0.0 }))
    }
    async fn list(&self, r: Request<ListCollectionsRequest>) -> Result<Response<ListCollectionsResponse>, Status> {
        authorised(&r)?;
        Ok(Response::new(ListCollectionsResponse::default()))
    }
    async fn update(&self, r: Request<UpdateCollection>) -> Result<Response<CollectionOperationResponse>, Status> {
        authorised(&r)?;
        let mut script = self.0.lock().unwrap();
        script.updates += 1;
        // What an empty optimisers update does to pending optimisations: they start.
        script.statuses = vec![CollectionStatus::Yellow, CollectionStatus::Yellow, CollectionStatus::Green];
        script.infos = 0;
        Ok(Response::new(CollectionOperationResponse { result: true, time: 0.0 }))
    }
    async fn create(&self, _: Request<CreateCollection>) -> Result<Response<CollectionOperationResponse>, Status> {
        unscripted()
    }
    async fn delete(&self, _: Request<DeleteCollection>) -> Result<Response<CollectionOperationResponse>, Status> {
        unscripted()
    }
    async fn update_aliases(&self, _: Request<ChangeAliases>) -> Result<Response<CollectionOperationResponse>, Status> {
        unscripted()
    }
    async fn list_collection_aliases(
        &self,
        _: Request<ListCollectionAliasesRequest>,
    ) -> Result<Response<ListAliasesResponse>, Status> {
        unscripted()
    }
    async fn list_aliases(&self, _: Request<ListAliasesRequest>) -> Result<Response<ListAliasesResponse>, Status> {
        unscripted()
    }
    async fn collection_cluster_info(
        &self,
        _: Request<CollectionClusterInfoRequest>,
    ) -> Result<Response<CollectionClusterInfoResponse>, Status> {
        unscripted()
    }
    async fn collection_exists(
        &self,
        _: Request<CollectionExistsRequest>,
    ) -> Result<Response<CollectionExistsResponse>, Status> {
        unscripted()
    }
    async fn update_collection_cluster_setup(
        &self,
        _: Request<UpdateCollectionClusterSetupRequest>,
    ) -> Result<Response<UpdateCollectionClusterSetupResponse>, Status> {
        unscripted()
    }
    async fn create_shard_key(
        &self,
        _: Request<CreateShardKeyRequest>,
    ) -> Result<Response<CreateShardKeyResponse>, Status> {
        unscripted()
    }
    async fn delete_shard_key(
        &self,
        _: Request<DeleteShardKeyRequest>,
    ) -> Result<Response<DeleteShardKeyResponse>, Status> {
        unscripted()
    }
    async fn list_shard_keys(
        &self,
        _: Request<ListShardKeysRequest>,
    ) -> Result<Response<ListShardKeysResponse>, Status> {
        unscripted()
    }
}

/// Serves the scripted Qdrant on a free port; returns its URL.
async fn serve(fake: FakeQdrant) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QdrantServer::new(fake.clone()))
            .add_service(CollectionsServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

fn options(url: &str, key: Option<&str>) -> ServerOptions {
    let mut options = ServerOptions::new(url);
    options.api_key = key.map(str::to_owned);
    options
}

#[tokio::test]
async fn a_refused_key_fails_the_connect_and_names_the_server() {
    let url = serve(FakeQdrant::default()).await;
    let wrong = QdrantServerStore::connect(&options(&url, Some("not-it"))).await.unwrap_err();
    assert!(
        matches!(&wrong, StoreError::Unauthorized(m) if *m == format!("Qdrant rejected the API key at {url}")),
        "{wrong:?}"
    );
    let none = QdrantServerStore::connect(&options(&url, None)).await.unwrap_err();
    assert!(
        matches!(&none, StoreError::Unauthorized(m) if *m == format!("Qdrant at {url} needs an API key; none was given")),
        "{none:?}"
    );
    QdrantServerStore::connect(&options(&url, Some(KEY))).await.unwrap();
}

#[tokio::test]
async fn a_missing_collection_is_named_once() {
    let url = serve(FakeQdrant::default()).await;
    let store = QdrantServerStore::connect(&options(&url, Some(KEY))).await.unwrap();
    let e = store.stats("reid_gone").await.unwrap_err();
    assert!(matches!(&e, StoreError::CollectionNotFound(name) if name == "reid_gone"), "{e:?}");
    assert_eq!(e.to_string(), r#"collection "reid_gone" does not exist"#);
}

#[tokio::test]
async fn optimize_waits_for_the_optimiser_and_starts_pending_work() {
    let fake = FakeQdrant::default();
    fake.0.lock().unwrap().statuses = vec![CollectionStatus::Grey];
    let url = serve(fake.clone()).await;
    let store = QdrantServerStore::connect(&options(&url, Some(KEY))).await.unwrap();
    store.optimize("indexing").await.unwrap();
    let (updates, infos) = {
        let script = fake.0.lock().unwrap();
        (script.updates, script.infos)
    };
    assert_eq!(updates, 1, "pending optimisations are started once");
    assert_eq!(infos, 3, "it returned before the optimiser finished");

    // A failed optimiser is an error, not a wait.
    let failing = FakeQdrant::default();
    failing.0.lock().unwrap().statuses = vec![CollectionStatus::Yellow, CollectionStatus::Red];
    let store = QdrantServerStore::connect(&options(&serve(failing).await, Some(KEY))).await.unwrap();
    let e = store.optimize("indexing").await.unwrap_err();
    assert!(e.to_string().contains("is red"), "{e}");
}
