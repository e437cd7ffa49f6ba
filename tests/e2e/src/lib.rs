//! End-to-end tests across reid's services live in `tests/`; each starts the services it needs
//! in-process on `127.0.0.1:0` and talks to them over real gRPC, through the proto clients only.
