//! A GGUF v3 writer (and a reader, for tests and tools) with ggml's ternary type TQ2_0.
//!
//! Layout (little-endian): magic `GGUF`, version 3, tensor count, key/value count, the key/values,
//! the tensor infos (name, dims with ne0 = innermost, ggml type, offset into the data section), zero
//! padding to `general.alignment` (32), then each tensor's data at an aligned offset.
//!
//! TQ2_0 (ggml type 35): blocks of 256 weights = 64 bytes of 2-bit codes `q ∈ {0,1,2}` meaning
//! `q − 1`, then an f16 scale `d`. Byte `32·c + m` of a block holds elements `128·c + 32·n + m`
//! for n = 0..4 in bits `2n..2n+2` (the order of ggml's `quantize_row_tq2_0_ref`).

use std::collections::BTreeMap;

use half::f16;

/// ggml tensor types used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// Ternary, 2 bits per weight, 256-weight blocks with an f16 scale.
    Tq2_0,
}

impl GgmlType {
    /// ggml's numeric id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Tq2_0 => 35,
        }
    }

    /// The type for a numeric id.
    pub fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            35 => Some(GgmlType::Tq2_0),
            _ => None,
        }
    }

    /// Bytes for `n` elements (n a multiple of 256 for TQ2_0).
    pub fn byte_len(self, n: usize) -> usize {
        match self {
            GgmlType::F32 => n * 4,
            GgmlType::F16 => n * 2,
            GgmlType::Tq2_0 => n / TQ2_BLOCK * TQ2_BLOCK_BYTES,
        }
    }
}

/// Weights per TQ2_0 block (QK_K).
pub const TQ2_BLOCK: usize = 256;
/// Bytes per TQ2_0 block.
pub const TQ2_BLOCK_BYTES: usize = 66;
/// Data alignment written into `general.alignment`.
pub const ALIGNMENT: usize = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8.
    String(String),
    /// GGUF type 9 with elements of one type.
    Array(Vec<Value>),
    /// GGUF type 10.
    U64(u64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
        }
    }
}

/// One tensor to write: name, ggml dims (ne0 first) and encoded bytes.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    /// llama.cpp tensor name.
    pub name: String,
    /// ggml dims, innermost first (`[in, out]` for a `[out, in]` matrix).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Encoded data.
    pub data: Vec<u8>,
}

/// Packs ternary codes (values −1, 0, 1; length a multiple of 256) with one scale into TQ2_0.
pub fn pack_tq2_0(codes: &[i8], scale: f32) -> Vec<u8> {
    let d = f16::from_f32(scale).to_le_bytes();
    let mut out = Vec::with_capacity(codes.len() / TQ2_BLOCK * TQ2_BLOCK_BYTES);
    for block in codes.chunks(TQ2_BLOCK) {
        let mut qs = [0u8; 64];
        for (c, half) in block.chunks(128).enumerate() {
            for m in 0..32 {
                let mut byte = 0u8;
                for n in 0..4 {
                    let code = half.get(32 * n + m).copied().unwrap_or(0);
                    let q = (code.clamp(-1, 1) + 1) as u8;
                    byte |= q << (2 * n);
                }
                qs[32 * c + m] = byte;
            }
        }
        out.extend_from_slice(&qs);
        out.extend_from_slice(&d);
    }
    out
}

/// Dequantizes TQ2_0 bytes (ggml's `dequantize_row_tq2_0`).
pub fn unpack_tq2_0(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / TQ2_BLOCK_BYTES * TQ2_BLOCK);
    for block in bytes.chunks_exact(TQ2_BLOCK_BYTES) {
        let d = f16::from_le_bytes([block[64], block[65]]).to_f32();
        for c in 0..2 {
            for n in 0..4 {
                for m in 0..32 {
                    let q = (block[32 * c + m] >> (2 * n)) & 3;
                    out.push((f32::from(q) - 1.0) * d);
                }
            }
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(items) => {
            let ty = items.first().map_or(4, Value::type_id);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
    }
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % ALIGNMENT != 0 {
        out.push(0);
    }
}

/// Serialises a GGUF v3 file.
pub fn write_gguf(metadata: &[(String, Value)], tensors: &[GgufTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.data.len();
        offset = offset.div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    pad(&mut out);
    for t in tensors {
        out.extend_from_slice(&t.data);
        pad(&mut out);
    }
    out
}

/// A parsed GGUF file.
#[derive(Clone, Debug)]
pub struct GgufFile {
    /// Format version.
    pub version: u32,
    /// Key/values in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos: name → (dims, type, absolute byte range).
    pub tensors: BTreeMap<String, (Vec<u64>, GgmlType, std::ops::Range<usize>)>,
    /// Tensor names in file order.
    pub order: Vec<String>,
}

/// Errors of GGUF parsing.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Malformed or truncated input.
    #[error("gguf: {0}")]
    Format(String),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.b.len());
        let end =
            end.ok_or_else(|| GgufError::Format(format!("truncated at byte {}", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self) -> Result<usize, GgufError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.b.len())
            .ok_or_else(|| GgufError::Format(format!("length {n} exceeds the file")))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| GgufError::Format(e.to_string()))
    }
    fn value(&mut self, ty: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.take(1)?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let ety = self.u32()?;
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(ety)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            other => return Err(GgufError::Format(format!("unsupported value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Parses a file (never panics on malformed input).
    pub fn parse(bytes: &[u8]) -> Result<Self, GgufError> {
        let mut r = Reader { b: bytes, pos: 0 };
        if r.take(4)? != b"GGUF" {
            return Err(GgufError::Format("bad magic, expected GGUF".into()));
        }
        let version = r.u32()?;
        let n_tensors = r.len()?;
        let n_kv = r.len()?;
        let mut metadata = Vec::new();
        for _ in 0..n_kv {
            let k = r.string()?;
            let ty = r.u32()?;
            metadata.push((k, r.value(ty)?));
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string()?;
            let nd = r.u32()? as usize;
            if nd > 4 {
                return Err(GgufError::Format(format!("tensor {name}: {nd} dims")));
            }
            let mut dims = Vec::with_capacity(nd);
            for _ in 0..nd {
                dims.push(r.u64()?);
            }
            let id = r.u32()?;
            let ty = GgmlType::from_id(id).ok_or_else(|| {
                GgufError::Format(format!("tensor {name}: unsupported ggml type {id}"))
            })?;
            let offset = r.len()?;
            infos.push((name, dims, ty, offset));
        }
        let data_start = r.pos.div_ceil(ALIGNMENT) * ALIGNMENT;
        let mut tensors = BTreeMap::new();
        let mut order = Vec::new();
        for (name, dims, ty, offset) in infos {
            let n = dims.iter().try_fold(1usize, |a, d| {
                usize::try_from(*d).ok().and_then(|d| a.checked_mul(d))
            });
            let n = n.ok_or_else(|| GgufError::Format(format!("tensor {name}: size overflows")))?;
            let start = data_start
                .checked_add(offset)
                .ok_or_else(|| GgufError::Format("offset overflows".into()))?;
            let end = start
                .checked_add(ty.byte_len(n))
                .filter(|e| *e <= bytes.len());
            let end = end.ok_or_else(|| {
                GgufError::Format(format!("tensor {name} runs past the end of the file"))
            })?;
            order.push(name.clone());
            tensors.insert(name, (dims, ty, start..end));
        }
        Ok(Self {
            version,
            metadata,
            tensors,
            order,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor dequantized to f32 (ggml order: ne0 fastest).
    pub fn tensor_f32(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, GgufError> {
        let (_, ty, range) = self
            .tensors
            .get(name)
            .ok_or_else(|| GgufError::Format(format!("no tensor {name}")))?;
        let data = bytes
            .get(range.clone())
            .ok_or_else(|| GgufError::Format("range".into()))?;
        Ok(match ty {
            GgmlType::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GgmlType::F16 => data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GgmlType::Tq2_0 => unpack_tq2_0(data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tq2_0_packs_in_ggml_order() {
        let codes: Vec<i8> = (0..512).map(|i| ((i * 7 + i / 5) % 3) as i8 - 1).collect();
        let bytes = pack_tq2_0(&codes, 0.5);
        assert_eq!(bytes.len(), 2 * 66);
        // Element 32·n + m of the first half sits in byte m, bits 2n.
        assert_eq!((bytes[5] >> 4) & 3, (codes[64 + 5] + 1) as u8);
        assert_eq!((bytes[32 + 7] >> 6) & 3, (codes[128 + 96 + 7] + 1) as u8);
        assert_eq!(f16::from_le_bytes([bytes[64], bytes[65]]).to_f32(), 0.5);
        let back = unpack_tq2_0(&bytes);
        let want: Vec<f32> = codes.iter().map(|c| f32::from(*c) * 0.5).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn parser_rejects_garbage_without_panicking() {
        assert!(GgufFile::parse(b"GGML").is_err());
        let mut ok = write_gguf(&[("a".into(), Value::U32(1))], &[]);
        assert!(GgufFile::parse(&ok).is_ok());
        ok.truncate(ok.len() - 30);
        assert!(GgufFile::parse(&ok).is_err());
        let mut huge = b"GGUF".to_vec();
        huge.extend_from_slice(&3u32.to_le_bytes());
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&0u64.to_le_bytes());
        assert!(GgufFile::parse(&huge).is_err());
    }
}
