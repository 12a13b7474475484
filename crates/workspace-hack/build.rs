// Without a build script cargo ignores the [build-dependencies] above, and build scripts and
// proc macros would again see different features per package selection.
fn main() {}
