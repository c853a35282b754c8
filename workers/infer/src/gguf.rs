//! GGUF reader (placeholder until the reader lands).

use std::path::Path;

use crate::model::{LoadOptions, Model};

pub(crate) fn load_gguf(path: &Path, _opts: &LoadOptions) -> anyhow::Result<Model> {
    anyhow::bail!("{}: GGUF loading not implemented yet", path.display())
}
