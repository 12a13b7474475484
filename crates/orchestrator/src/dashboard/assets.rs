//! The page and what it loads, compiled into the binary: the dashboard works offline, from any
//! directory, with nothing to install.
//!
//! The plots are drawn by uPlot 1.6.32 (MIT licence, `assets/uPlot.LICENSE`; 51 KB minified,
//! 22 KB gzipped), fetched from the npm registry by `scripts/fetch-uplot.sh`, which checks the
//! package's published integrity hash; the test below pins the files' sums, so they are never
//! edited by hand. Why uPlot: it is small and fast on canvas, made for streaming series (the
//! curves of runs in flight), and kept up by its author since 2019. The crates.io way, `plotly`
//! with `plotly_embed_js`, gives the page only as one string with MathJax beside plotly.js
//! (6.8 MB to send and parse on every load, 130 times uPlot) and adds a dozen crates to the build.

/// The page.
pub fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("assets/index.html"))
}

/// The asset `name` and its content type.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, mime, body)| (mime, body))
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: [(&str, &str, &str); 5] = [
    ("dashboard.js", JS, include_str!("assets/dashboard.js")),
    ("dashboard.css", CSS, include_str!("assets/dashboard.css")),
    (
        "uPlot.iife.min.js",
        JS,
        include_str!("assets/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", CSS, include_str!("assets/uPlot.min.css")),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_str!("assets/uPlot.LICENSE"),
    ),
];

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// The sums `scripts/fetch-uplot.sh` prints for uPlot 1.6.32.
    const UPLOT: [(&str, &str); 3] = [
        (
            "uPlot.iife.min.js",
            "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
        ),
        (
            "uPlot.min.css",
            "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
        ),
        (
            "uPlot.LICENSE",
            "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
        ),
    ];

    #[test]
    fn the_plotting_library_is_the_one_fetched_from_npm() {
        for (name, sum) in UPLOT {
            let (_, body) = get(name).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(body.as_bytes())),
                sum,
                "{name} differs from uPlot 1.6.32: run scripts/fetch-uplot.sh"
            );
        }
        let page = page().0;
        for (name, _, _) in ASSETS.iter().filter(|(n, _, _)| !n.ends_with("LICENSE")) {
            assert!(page.contains(&format!("/assets/{name}")), "{name} unused");
        }
        assert!(
            !page.contains("http"),
            "the page loads nothing from elsewhere"
        );
    }
}
