// Links the trainer and the evaluator against libtorch the way a GPU run needs:
// - libtorch's lib directory goes into the rpath, so both start (also when the orchestrator
//   copies them aside) without anyone setting LD_LIBRARY_PATH;
// - libtorch_cuda.so is linked even though no symbol of it is referenced: it registers the CUDA
//   backend when it loads, and the linker's default `--as-needed` would drop it, leaving
//   `tch::Cuda::is_available()` false on a GPU machine;
// - `runtime/shim.cpp` is compiled against libtorch's headers for what tch does not expose.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=runtime/shim.cpp");
    let libtorch = PathBuf::from(std::env::var("LIBTORCH").expect(
        "LIBTORCH is not set: run scripts/setup-libtorch.sh (.cargo/config.toml points LIBTORCH at .libtorch)",
    ));
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    cc::Build::new()
        .cpp(true)
        // Glue that calls into libtorch once per operation: most of its compile is libtorch's
        // headers, optimizing it would only lengthen a fresh machine's first build.
        .opt_level(0)
        .file("runtime/shim.cpp")
        .include(libtorch.join("include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("runtime_shim");
}
