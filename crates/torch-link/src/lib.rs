//! Called from the build script of every crate whose binaries or tests link libtorch.
//!
//! torch-sys links libtorch but leaves finding it at run time to `LD_LIBRARY_PATH`, and with the
//! default `--as-needed` the linker drops `libtorch_cuda`, so `tch::Cuda::is_available()` is false
//! even on a GPU machine (tch-rs #980). The calling crate must depend on `torch-sys` directly so
//! that cargo hands its build script `DEP_TCH_LIBTORCH_LIB`.

/// Emits an rpath to the libtorch directory and forces libtorch (and through it libtorch_cuda)
/// to be linked.
pub fn emit() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB is not set: depend on torch-sys directly");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-L{lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
