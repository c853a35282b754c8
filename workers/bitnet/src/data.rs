//! Training data: text discovery, a BPE tokenizer trained with the `tokenizers` crate, token shards
//! on disk, and a loader that streams fixed-length windows from them.
//!
//! Documents (files) are assigned to train / validation / held-out test by a hash of their path, so
//! the three splits never share a document; the tokenizer is trained on the train split only.
//! Shards are little-endian u32 token files (`train-00000.bin`, …); the loader reads windows with
//! `seek` + `read`, so memory does not grow with the corpus.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::rng::SplitMix64;

/// The one special token: document separator, also used as BOS and EOS (id 0).
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// Where the text comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// Discover real text at run time (Rust sources in the cargo registry, then `/usr/share/doc`
    /// prose), falling back to generated text when none is found.
    Auto,
    /// Files under these directories (recursively, text files only).
    Dirs(Vec<PathBuf>),
    /// Deterministic generated text (tests, machines without any text).
    Generated,
}

/// Data preparation settings (`[data]` in train.toml).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DataConfig {
    /// Text origin.
    pub source: TextSource,
    /// Stop collecting text after this many bytes.
    pub max_bytes: usize,
    /// Skip files larger than this.
    pub max_file_bytes: u64,
    /// File extensions accepted in directory walks (without dot); `README`-like names always are.
    pub extensions: Vec<String>,
    /// Per-mille of documents in validation.
    pub val_per_mille: u64,
    /// Per-mille of documents in the held-out test split.
    pub test_per_mille: u64,
    /// Tokens per shard file.
    pub shard_tokens: usize,
    /// BPE merges stop at this many tokens (including the special token and 256 byte tokens).
    pub vocab_size: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: TextSource::Auto,
            max_bytes: 8 << 20,
            max_file_bytes: 256 << 10,
            extensions: vec!["rs".into(), "md".into(), "txt".into()],
            val_per_mille: 50,
            test_per_mille: 50,
            shard_tokens: 1 << 20,
            vocab_size: 8192,
        }
    }
}

/// One split of the corpus.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training documents.
    Train,
    /// Validation documents (loss on a schedule).
    Val,
    /// Held-out test documents (final figure only).
    Test,
}

impl Split {
    /// File prefix of this split's shards.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// What `prepare` produced (saved as `data.json` beside the shards).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DataManifest {
    /// Human-readable origin of the text.
    pub source: String,
    /// Documents per split.
    pub documents: BTreeMap<String, usize>,
    /// Tokens per split.
    pub tokens: BTreeMap<String, u64>,
    /// Bytes of text used.
    pub bytes: u64,
    /// Vocabulary size of the trained tokenizer.
    pub vocab_size: usize,
    /// The settings used.
    pub config: DataConfig,
    /// Seed of the document order.
    #[serde(default)]
    pub seed: u64,
}

/// Errors of data preparation and loading.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// File system failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Tokenizer training or loading failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Not enough data for the requested windows.
    #[error("{0}")]
    TooSmall(String),
    /// Manifest (de)serialisation.
    #[error("manifest: {0}")]
    Json(#[from] serde_json::Error),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DataError {
    let context = context.into();
    move |source| DataError::Io { context, source }
}

/// FNV-1a of a string: stable across runs and platforms (split assignment, shuffles).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn split_of(key: &str, cfg: &DataConfig) -> Split {
    let bucket = fnv1a(key) % 1000;
    if bucket < cfg.val_per_mille {
        Split::Val
    } else if bucket < cfg.val_per_mille + cfg.test_per_mille {
        Split::Test
    } else {
        Split::Train
    }
}

fn walk(dir: &Path, cfg: &DataConfig, out: &mut Vec<PathBuf>, budget: &mut usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if out.len() >= *budget {
            return;
        }
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            walk(&p, cfg, out, budget);
        } else if meta.is_file() && meta.len() > 0 && meta.len() <= cfg.max_file_bytes {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let ext_ok = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| cfg.extensions.iter().any(|x| x == e));
            if ext_ok || name.starts_with("README") {
                out.push(p);
            }
        }
    }
}

/// Directories searched by [`TextSource::Auto`], in order.
pub fn default_text_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        dirs.push(home.join("registry").join("src"));
    }
    dirs.push(PathBuf::from("/usr/share/doc"));
    dirs
}

/// Collects (key, text) documents as configured, at most `max_bytes` in total.
/// Returns the documents and a description of the source.
pub fn collect_documents(cfg: &DataConfig, seed: u64) -> (Vec<(String, String)>, String) {
    let dirs = match &cfg.source {
        TextSource::Generated => {
            return (
                generated_documents(cfg.max_bytes.min(2 << 20), seed),
                "generated".into(),
            )
        }
        TextSource::Auto => default_text_dirs(),
        TextSource::Dirs(d) => d.clone(),
    };
    let mut files = Vec::new();
    // A walk bound: enough candidates to fill max_bytes many times over, without listing the disk.
    let mut budget = 200_000usize;
    for d in &dirs {
        walk(d, cfg, &mut files, &mut budget);
    }
    // Spread the byte budget over many packages: order by a seeded hash of the path.
    files.sort_by_key(|p| fnv1a(&p.to_string_lossy()) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut docs = Vec::new();
    let mut total = 0usize;
    for p in files {
        if total >= cfg.max_bytes {
            break;
        }
        let Ok(bytes) = fs::read(&p) else { continue };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        total = total.saturating_add(text.len());
        docs.push((p.to_string_lossy().into_owned(), text));
    }
    if docs.is_empty() {
        let generated = generated_documents(cfg.max_bytes.min(2 << 20), seed);
        return (generated, "generated (no text found)".into());
    }
    let desc = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    (docs, format!("files under {desc}"))
}

/// Deterministic generated prose: small grammar over a fixed lexicon, with agreement patterns a
/// model can learn (tests and machines with no text).
pub fn generated_documents(max_bytes: usize, seed: u64) -> Vec<(String, String)> {
    const SUBJ: [&str; 8] = [
        "the cat",
        "a dog",
        "the model",
        "my friend",
        "the river",
        "a child",
        "the node",
        "our team",
    ];
    const VERB: [&str; 8] = [
        "sees", "likes", "trains", "finds", "follows", "builds", "reads", "counts",
    ];
    const OBJ: [&str; 8] = [
        "the ball",
        "a tree",
        "the data",
        "some bread",
        "the chain",
        "a letter",
        "the stars",
        "ten blocks",
    ];
    const ADV: [&str; 6] = [
        "today",
        "again",
        "slowly",
        "at night",
        "with care",
        "every day",
    ];
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    let mut docs = Vec::new();
    let mut total = 0usize;
    let mut i = 0usize;
    while total < max_bytes.max(1) {
        let mut text = String::new();
        let n = 5 + rng.below(20) as usize;
        for _ in 0..n {
            let s = rng.below(8) as usize;
            // The verb depends on the subject and the object on the verb: learnable structure.
            let v = (s + rng.below(2) as usize) % 8;
            let o = (v * 3 + rng.below(2) as usize) % 8;
            let a = rng.below(6) as usize;
            text.push_str(&format!("{} {} {} {}. ", SUBJ[s], VERB[v], OBJ[o], ADV[a]));
        }
        text.push('\n');
        total = total.saturating_add(text.len());
        docs.push((format!("generated/{i:06}"), text));
        i = i.saturating_add(1);
    }
    docs
}

/// Trains a byte-level BPE tokenizer (GPT-2 style) on `texts`.
pub fn train_tokenizer<'a>(
    texts: impl Iterator<Item = &'a str> + Send,
    vocab_size: usize,
) -> Result<Tokenizer, DataError> {
    let tok_err = |e: tokenizers::Error| DataError::Tokenizer(e.to_string());
    let mut trainer: tokenizers::models::TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS_TOKEN, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer.with_post_processor(Some(ByteLevel::default()));
    tokenizer.train(&mut trainer, texts).map_err(tok_err)?;
    Ok(tokenizer)
}

/// Loads a `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, DataError> {
    Tokenizer::from_file(path).map_err(|e| DataError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Collects text, trains the tokenizer on the train split, writes `tokenizer.json`, the shards and
/// `data.json` into `dir`. Reuses an existing preparation with the same settings.
pub fn prepare(cfg: &DataConfig, dir: &Path, seed: u64) -> Result<DataManifest, DataError> {
    let manifest_path = dir.join("data.json");
    if let Ok(bytes) = fs::read(&manifest_path) {
        if let Ok(m) = serde_json::from_slice::<DataManifest>(&bytes) {
            if m.config == *cfg && m.seed == seed && dir.join("tokenizer.json").exists() {
                return Ok(m);
            }
        }
    }
    fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let (docs, source) = collect_documents(cfg, seed);
    let bytes: u64 = docs.iter().map(|(_, t)| t.len() as u64).sum();
    let mut by_split: BTreeMap<Split, Vec<&str>> = BTreeMap::new();
    for (key, text) in &docs {
        by_split
            .entry(split_of(key, cfg))
            .or_default()
            .push(text.as_str());
    }
    // Tiny corpora can leave a split empty: move one document so every split exists.
    for s in [Split::Val, Split::Test] {
        if by_split.get(&s).is_none_or(|v| v.is_empty()) {
            let moved = by_split.get_mut(&Split::Train).and_then(|v| v.pop());
            if let Some(t) = moved {
                by_split.entry(s).or_default().push(t);
            }
        }
    }
    let train_texts = by_split.get(&Split::Train).cloned().unwrap_or_default();
    if train_texts.is_empty() {
        return Err(DataError::TooSmall("no training documents".into()));
    }
    let tokenizer = train_tokenizer(train_texts.iter().copied(), cfg.vocab_size)?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| DataError::Tokenizer(e.to_string()))?;
    let eos = tokenizer
        .token_to_id(EOS_TOKEN)
        .ok_or_else(|| DataError::Tokenizer("special token missing".into()))?;
    let mut documents = BTreeMap::new();
    let mut tokens = BTreeMap::new();
    for (split, texts) in &by_split {
        let mut writer = ShardWriter::new(dir, *split, cfg.shard_tokens)?;
        for text in texts {
            let enc = tokenizer
                .encode(*text, false)
                .map_err(|e| DataError::Tokenizer(e.to_string()))?;
            writer.push(enc.get_ids())?;
            writer.push(&[eos])?;
        }
        let n = writer.finish()?;
        documents.insert(split.name().to_string(), texts.len());
        tokens.insert(split.name().to_string(), n);
    }
    let manifest = DataManifest {
        source,
        documents,
        tokens,
        bytes,
        vocab_size: tokenizer.get_vocab_size(true),
        config: cfg.clone(),
        seed,
    };
    fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)
        .map_err(io(format!("write {}", manifest_path.display())))?;
    Ok(manifest)
}

struct ShardWriter {
    dir: PathBuf,
    split: Split,
    per_shard: usize,
    index: usize,
    buf: Vec<u32>,
    total: u64,
}

impl ShardWriter {
    fn new(dir: &Path, split: Split, per_shard: usize) -> Result<Self, DataError> {
        // Remove shards of an older preparation.
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{}-", split.name())) && name.ends_with(".bin") {
                    fs::remove_file(e.path()).map_err(io(format!("remove {name}")))?;
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            split,
            per_shard: per_shard.max(1),
            index: 0,
            buf: Vec::new(),
            total: 0,
        })
    }

    fn push(&mut self, ids: &[u32]) -> Result<(), DataError> {
        self.buf.extend_from_slice(ids);
        while self.buf.len() >= self.per_shard {
            let rest = self.buf.split_off(self.per_shard);
            self.flush()?;
            self.buf = rest;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self
            .dir
            .join(format!("{}-{:05}.bin", self.split.name(), self.index));
        let mut bytes = Vec::with_capacity(self.buf.len() * 4);
        for t in &self.buf {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        let mut f = fs::File::create(&path).map_err(io(format!("create {}", path.display())))?;
        f.write_all(&bytes)
            .map_err(io(format!("write {}", path.display())))?;
        self.total = self.total.saturating_add(self.buf.len() as u64);
        self.index = self.index.saturating_add(1);
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<u64, DataError> {
        self.flush()?;
        Ok(self.total)
    }
}

/// Streams token windows out of one split's shards.
pub struct TokenShards {
    shards: Vec<(PathBuf, u64)>,
    total: u64,
}

impl TokenShards {
    /// Opens the shards of `split` in `dir`.
    pub fn open(dir: &Path, split: Split) -> Result<Self, DataError> {
        let mut shards = Vec::new();
        let entries = fs::read_dir(dir).map_err(io(format!("read {}", dir.display())))?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("{}-", split.name())) && n.ends_with(".bin")
                })
            })
            .collect();
        paths.sort();
        let mut total = 0u64;
        for p in paths {
            let len = fs::metadata(&p)
                .map_err(io(format!("stat {}", p.display())))?
                .len()
                / 4;
            total = total.saturating_add(len);
            shards.push((p, len));
        }
        Ok(Self { shards, total })
    }

    /// Tokens in this split.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// No tokens at all.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Reads `n` tokens starting at global position `start` (across shard boundaries).
    pub fn read(&self, start: u64, n: usize) -> Result<Vec<u32>, DataError> {
        let mut out = Vec::with_capacity(n);
        let mut pos = start;
        for (path, len) in &self.shards {
            if out.len() == n {
                break;
            }
            if pos >= *len {
                pos -= len;
                continue;
            }
            let take = ((len - pos) as usize).min(n - out.len());
            let mut f = fs::File::open(path).map_err(io(format!("open {}", path.display())))?;
            f.seek(SeekFrom::Start(pos * 4)).map_err(io("seek shard"))?;
            let mut bytes = vec![0u8; take * 4];
            f.read_exact(&mut bytes).map_err(io("read shard"))?;
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            pos = 0;
        }
        if out.len() != n {
            return Err(DataError::TooSmall(format!(
                "asked for {n} tokens at {start}, split has {}",
                self.total
            )));
        }
        Ok(out)
    }

    /// A training batch: `rows` random windows of `seq + 1` tokens, chosen only by
    /// (seed, step, micro): the same step always sees the same batch (exact resume).
    /// Returns (inputs, targets), each `rows × seq`, row-major.
    pub fn random_batch(
        &self,
        rows: usize,
        seq: usize,
        seed: u64,
        step: u64,
        micro: u64,
    ) -> Result<(Vec<u32>, Vec<u32>), DataError> {
        let span = seq as u64 + 1;
        if self.total < span {
            return Err(DataError::TooSmall(format!(
                "split has {} tokens, a window needs {span}",
                self.total
            )));
        }
        let mut rng = SplitMix64::derive(seed, step, micro);
        let mut windows = Vec::with_capacity(rows);
        for _ in 0..rows {
            windows.push(self.read(rng.below(self.total - span + 1), seq + 1)?);
        }
        Ok(split_windows(&windows, seq))
    }

    /// The `index`-th of the consecutive, non-overlapping evaluation batches (wraps around).
    pub fn eval_batch(
        &self,
        rows: usize,
        seq: usize,
        index: u64,
    ) -> Result<(Vec<u32>, Vec<u32>), DataError> {
        let span = seq as u64 + 1;
        let count = self.total / span;
        if count == 0 {
            return Err(DataError::TooSmall(format!(
                "split has {} tokens, a window needs {span}",
                self.total
            )));
        }
        let mut windows = Vec::with_capacity(rows);
        for r in 0..rows as u64 {
            let w = (index * rows as u64 + r) % count;
            windows.push(self.read(w * span, seq + 1)?);
        }
        Ok(split_windows(&windows, seq))
    }
}

fn split_windows(windows: &[Vec<u32>], seq: usize) -> (Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(windows.len() * seq);
    let mut y = Vec::with_capacity(windows.len() * seq);
    for w in windows {
        x.extend_from_slice(&w[..seq]);
        y.extend_from_slice(&w[1..=seq]);
    }
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_generated_splits_and_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DataConfig {
            source: TextSource::Generated,
            max_bytes: 200_000,
            vocab_size: 300,
            shard_tokens: 5000,
            ..DataConfig::default()
        };
        let m = prepare(&cfg, dir.path(), 1).expect("prepare");
        assert!(
            m.vocab_size <= 300 && m.vocab_size > 256,
            "{}",
            m.vocab_size
        );
        for s in ["train", "val", "test"] {
            assert!(m.tokens[s] > 0, "split {s} empty");
        }
        let train = TokenShards::open(dir.path(), Split::Train).expect("open");
        assert_eq!(train.len(), m.tokens["train"]);
        assert!(
            fs::read_dir(dir.path())
                .expect("ls")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("train-"))
                .count()
                > 1
        );
        // Windows crossing a shard boundary read the same tokens as two reads.
        let a = train.read(4990, 20).expect("read");
        let mut b = train.read(4990, 10).expect("read");
        b.extend(train.read(5000, 10).expect("read"));
        assert_eq!(a, b);
        let (x, y) = train.random_batch(3, 16, 9, 5, 0).expect("batch");
        assert_eq!((x.len(), y.len()), (48, 48));
        assert_eq!(&x[1..16], &y[0..15], "targets are inputs shifted by one");
        assert_eq!(
            train.random_batch(3, 16, 9, 5, 0).expect("batch"),
            (x.clone(), y)
        );
        assert_ne!(train.random_batch(3, 16, 9, 6, 0).expect("batch").0, x);
        // The tokenizer round-trips text.
        let tok = load_tokenizer(&dir.path().join("tokenizer.json")).expect("tok");
        let enc = tok
            .encode("the cat sees the ball today.", false)
            .expect("enc");
        let dec = tok.decode(enc.get_ids(), false).expect("dec");
        assert_eq!(dec, "the cat sees the ball today.");
        // Same settings: reused, not rebuilt.
        let again = prepare(&cfg, dir.path(), 1).expect("prepare");
        assert_eq!(again, m);
    }

    #[test]
    fn split_assignment_is_by_document() {
        let cfg = DataConfig::default();
        let mut counts = BTreeMap::new();
        for i in 0..10_000 {
            *counts
                .entry(split_of(&format!("doc/{i}"), &cfg))
                .or_insert(0usize) += 1;
        }
        assert!(
            counts[&Split::Val] > 350 && counts[&Split::Val] < 650,
            "{counts:?}"
        );
        assert!(
            counts[&Split::Test] > 350 && counts[&Split::Test] < 650,
            "{counts:?}"
        );
        assert_eq!(split_of("doc/17", &cfg), split_of("doc/17", &cfg));
    }
}
