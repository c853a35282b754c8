//! Named f32 tensors in safetensors files: the trainer's checkpoints (latent weights, AdamW moments,
//! config, step) and the Hugging Face `model.safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// A tensor by value: shape and row-major f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct F32Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Tensors by name plus string metadata, as stored in one safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, F32Tensor>,
    /// `__metadata__` of the file.
    pub metadata: BTreeMap<String, String>,
}

/// Errors reading or writing tensor files.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Malformed safetensors.
    #[error("{path}: {msg}")]
    Format {
        /// File.
        path: String,
        /// What is wrong.
        msg: String,
    },
}

impl TensorFile {
    /// Writes the file atomically (temp file + rename): a crash never leaves half a checkpoint.
    pub fn save(&self, path: &Path) -> Result<(), TensorFileError> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                let mut b = Vec::with_capacity(t.values.len() * 4);
                for v in &t.values {
                    b.extend_from_slice(&v.to_le_bytes());
                }
                (n.clone(), b, t.shape.clone())
            })
            .collect();
        let fmt = |msg: String| TensorFileError::Format {
            path: path.display().to_string(),
            msg,
        };
        let mut views = Vec::with_capacity(bytes.len());
        for (n, b, s) in &bytes {
            let view = TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| fmt(e.to_string()))?;
            views.push((n.clone(), view));
        }
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        let meta = if meta.is_empty() { None } else { Some(meta) };
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::tensor::serialize_to_file(views, meta, &tmp)
            .map_err(|e| fmt(e.to_string()))?;
        fs::rename(&tmp, path).map_err(|source| TensorFileError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Reads a file written by [`Self::save`] (or any safetensors file of f32 tensors).
    pub fn load(path: &Path) -> Result<Self, TensorFileError> {
        let p = path.display().to_string();
        let bytes = fs::read(path).map_err(|source| TensorFileError::Io {
            path: p.clone(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|msg| TensorFileError::Format { path: p, msg })
    }

    /// Parses safetensors bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "tensor {name}: expected F32, got {:?}",
                    view.dtype()
                ));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(
                name,
                F32Tensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Self { tensors, metadata })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_file_round_trips_bit_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = TensorFile::default();
        let odd = vec![f32::MIN_POSITIVE, -0.0, 1e-38, 3.4e38, -1.5, f32::EPSILON];
        f.tensors.insert(
            "a.weight".into(),
            F32Tensor {
                shape: vec![2, 3],
                values: odd,
            },
        );
        f.tensors.insert(
            "b".into(),
            F32Tensor {
                shape: vec![1],
                values: vec![7.0],
            },
        );
        f.metadata.insert("step".into(), "12".into());
        let path = dir.path().join("x.safetensors");
        f.save(&path).expect("save");
        let g = TensorFile::load(&path).expect("load");
        assert_eq!(f.metadata, g.metadata);
        for (n, t) in &f.tensors {
            let u = &g.tensors[n];
            assert_eq!(t.shape, u.shape);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&t.values), bits(&u.values));
        }
        assert!(TensorFile::from_bytes(b"not a safetensors file").is_err());
    }
}
