//! Model checkpoints as safetensors files (the parameters of a `VarStore` under their names, plus
//! string metadata), written atomically.

use crate::error::ExperimentError;
use datasets::atomic::write_atomic as atomic_write;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

fn dtype_of(kind: Kind) -> Option<(Dtype, Kind)> {
    match kind {
        Kind::Float => Some((Dtype::F32, Kind::Float)),
        Kind::Double => Some((Dtype::F64, Kind::Double)),
        _ => None,
    }
}

/// Saves every variable of `vs` (CPU copies, in their own float kind) and `metadata` to `path`
/// atomically.
///
/// Errors: as [`save_with`].
pub fn save(
    vs: &VarStore,
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<(), ExperimentError> {
    save_with(vs, &[], metadata, path)
}

/// Saves every variable of `vs`, the `extra` named tensors (an optimiser's state; their names
/// must not collide with the variables') and `metadata` to `path` atomically.
///
/// Errors: [`ExperimentError::Checkpoint`] for a tensor of a non-float kind, a duplicate name or
/// a serialisation failure; [`ExperimentError::Io`] if the file cannot be written. A failed save
/// leaves any previous file at `path` intact.
pub fn save_with(
    vs: &VarStore,
    extra: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<(), ExperimentError> {
    let err = |message: String| ExperimentError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.extend(extra.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = tensors.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(err(format!("two tensors named {}", w[0].0)));
    }
    let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let (dtype, kind) = dtype_of(t.kind())
            .ok_or_else(|| err(format!("{name}: unsupported kind {:?}", t.kind())))?;
        let t = t
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(kind)
            .contiguous();
        let mut bytes = vec![0u8; t.numel() * kind.elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, t.numel())
            .map_err(|e| err(format!("{name}: {e}")))?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        entries.push((name, dtype, shape, bytes));
    }
    let views = entries
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes =
        safetensors::serialize(views, &Some(metadata.clone())).map_err(|e| err(e.to_string()))?;
    Ok(atomic_write(path, &bytes)?)
}

/// A checkpoint's contents: every tensor by name (CPU, f32 or f64) and the metadata.
#[derive(Debug)]
pub struct Contents {
    /// The tensors.
    pub tensors: HashMap<String, Tensor>,
    /// The string metadata.
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor and the metadata of a safetensors checkpoint.
///
/// Errors: [`ExperimentError::Io`] if unreadable; [`ExperimentError::Checkpoint`] for a file that
/// is not safetensors (truncated, corrupt) or holds a tensor of a dtype other than f32, f64 or
/// i64, naming it.
pub fn read(path: &Path) -> Result<Contents, ExperimentError> {
    let err = |message: String| ExperimentError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| ExperimentError::io(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            // Integer buffers (e.g. the reference's ActNorm `initialized` flag).
            Dtype::I64 => Kind::Int64,
            other => return Err(err(format!("{name}: unsupported dtype {other:?}"))),
        };
        let value = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(|e| err(format!("{name}: {e}")))?;
        tensors.insert(name, value);
    }
    Ok(Contents {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
    })
}

/// Copies the variables of `vs` from checkpoint `contents` read from `path` (named in errors):
/// every variable must be present with the same shape (values are converted to the variable's
/// kind and device); other tensors in the file are ignored.
///
/// Errors: [`ExperimentError::Checkpoint`] for a missing tensor or a shape mismatch, naming it.
/// On error `vs` is unchanged.
pub fn restore(vs: &mut VarStore, contents: &Contents, path: &Path) -> Result<(), ExperimentError> {
    let err = |message: String| ExperimentError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let mut staged = Vec::new();
    for (name, var) in vs.variables() {
        let value = contents
            .tensors
            .get(&name)
            .ok_or_else(|| err(format!("missing tensor {name}")))?;
        if value.size() != var.size() {
            return Err(err(format!(
                "{name}: shape {:?} in the file, {:?} in the model",
                value.size(),
                var.size()
            )));
        }
        staged.push((var, value));
    }
    tch::no_grad(|| {
        for (mut var, value) in staged {
            var.copy_(&value.to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
}

/// Loads a checkpoint written by [`save`] or [`save_with`] into `vs` ([`read`] then
/// [`restore`]). Returns the metadata.
///
/// Errors: as [`read`] and [`restore`]; on error `vs` is unchanged.
pub fn load(vs: &mut VarStore, path: &Path) -> Result<HashMap<String, String>, ExperimentError> {
    let contents = read(path)?;
    restore(vs, &contents, path)?;
    Ok(contents.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn store(seed: i64) -> VarStore {
        let _rng = geometry::testing::seeded(seed);
        let vs = VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "layer", 3, 2, Default::default());
        vs
    }

    #[test]
    fn round_trip_and_corruption_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let a = store(1);
        let meta = HashMap::from([("epoch".to_string(), "7".to_string())]);
        save(&a, &meta, &path).unwrap();
        let mut b = store(2);
        assert_eq!(load(&mut b, &path).unwrap()["epoch"], "7");
        for (name, t) in a.variables() {
            assert!(t.equal(&b.variables()[&name]));
        }
        // Truncated file: an error naming the file, and the store keeps its values.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let mut c = store(3);
        let before = c.variables()["layer.weight"].copy();
        let e = load(&mut c, &path).unwrap_err();
        assert!(matches!(e, ExperimentError::Checkpoint { .. }), "{e}");
        assert!(e.to_string().contains("model.safetensors"));
        assert!(before.equal(&c.variables()["layer.weight"]));
    }
}
