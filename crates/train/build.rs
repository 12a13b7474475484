// Bakes libtorch's lib directory into the binary's rpath, so the trainer starts (also when the
// orchestrator copies it aside) without anyone setting LD_LIBRARY_PATH. The path is resolved
// through the `.libtorch` link so that the rpath names the real directory.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
