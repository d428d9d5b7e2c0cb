//! Calibration inputs: where `qcc calibrate --data PATH` gets its samples.
//!
//! - a `.npy` file whose first axis is the sample: for a model input `[1, C, H, W]` the file is
//!   `[S, C, H, W]` (one sample per row, the batch axis added back) or `[S, 1, C, H, W]`;
//! - a directory of `.npy` files, one sample each (`[C, H, W]` or `[1, C, H, W]`), taken in
//!   file-name order;
//! - a `.npz` archive (`numpy.savez`, compressed or not) with one array per model input,
//!   named after it, each stacked along its first axis like a `.npy` file; a single-input
//!   model also takes an archive holding one array under any name (`arr_0`);
//! - `--synthetic N`: seeded random inputs (the only choice when no data exists; accuracy
//!   claims need real data, and the CLI says so).
//!
//! Only single-input models take `.npy` files or directories (a `.npz` archive feeds any
//! number of inputs); every sample is checked against the model's input type, and a mismatch
//! names the file and both shapes.

use std::path::{Path, PathBuf};

use qcc_ir::{DType, Graph, Tensor, TensorType};

use crate::driver::DriverError;
use crate::npy;
use crate::rng::SeededRng;

/// Where the samples come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    Path(PathBuf),
    Synthetic { count: usize, seed: u64 },
}

/// The samples for `graph`'s inputs: each element holds one tensor per graph input, in the
/// graph's input order. At most `limit` samples are read.
pub fn load_samples(
    graph: &Graph,
    source: &DataSource,
    limit: Option<usize>,
) -> Result<Vec<Vec<Tensor>>, DriverError> {
    let inputs: Vec<TensorType> = graph
        .input_values()
        .iter()
        .map(|&v| graph.value(v).ty.clone())
        .collect();
    let limit = limit.unwrap_or(usize::MAX);
    match source {
        DataSource::Synthetic { count, seed } => {
            let mut rng = SeededRng::new(*seed);
            Ok((0..(*count).min(limit))
                .map(|_| {
                    inputs
                        .iter()
                        .map(|ty| crate::driver::random_tensor(ty, &mut rng))
                        .collect()
                })
                .collect())
        }
        DataSource::Path(path) if path.extension().is_some_and(|e| e == "npz") => {
            archive_samples(graph, path, limit)
        }
        DataSource::Path(path) => {
            let [input] = inputs.as_slice() else {
                return Err(DriverError::Other(format!(
                    "--data {}: the model has {} inputs; .npy files and directories feed \
                     single-input models only",
                    path.display(),
                    inputs.len()
                )));
            };
            let samples = if path.is_dir() {
                directory_samples(path, input, limit)?
            } else {
                stacked_samples(path, input, limit)?
            };
            if samples.is_empty() {
                return Err(DriverError::Other(format!(
                    "--data {}: no samples",
                    path.display()
                )));
            }
            Ok(samples.into_iter().map(|t| vec![t]).collect())
        }
    }
}

/// One sample per row of the file's first axis.
fn stacked_samples(
    path: &Path,
    input: &TensorType,
    limit: usize,
) -> Result<Vec<Tensor>, DriverError> {
    split_rows(&path.display().to_string(), &npy::read(path)?, input, limit)
}

/// The arrays of a `.npz` archive matched to the graph's inputs by name (or the only array
/// to the only input), each split into samples along its first axis.
fn archive_samples(
    graph: &Graph,
    path: &Path,
    limit: usize,
) -> Result<Vec<Vec<Tensor>>, DriverError> {
    let arrays = read_npz(path)?;
    let inputs: Vec<(String, TensorType)> = graph
        .input_values()
        .iter()
        .map(|&v| (graph.value(v).name.clone(), graph.value(v).ty.clone()))
        .collect();
    let single = inputs.len() == 1 && arrays.len() == 1;
    let mut per_input = Vec::new();
    for (name, ty) in &inputs {
        let array = arrays
            .iter()
            .find(|(key, _)| key == name || single)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                let held: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
                DriverError::Other(format!(
                    "--data {}: no array named '{name}' (a model input); the archive holds: {}",
                    path.display(),
                    held.join(", ")
                ))
            })?;
        let what = format!("{}:{name}", path.display());
        per_input.push(split_rows(&what, array, ty, limit)?);
    }
    let count = per_input.first().map_or(0, Vec::len);
    if let Some(other) = per_input.iter().find(|rows| rows.len() != count) {
        return Err(DriverError::Other(format!(
            "--data {}: the inputs' arrays hold different sample counts ({count} and {})",
            path.display(),
            other.len()
        )));
    }
    if count == 0 {
        return Err(DriverError::Other(format!(
            "--data {}: no samples",
            path.display()
        )));
    }
    Ok((0..count)
        .map(|i| per_input.iter().map(|rows| rows[i].clone()).collect())
        .collect())
}

/// The `.npy` arrays of a `.npz` archive, by name (the entry's name without `.npy`).
fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, DriverError> {
    let fail = |e: &dyn std::fmt::Display| {
        DriverError::Other(format!(
            "--data {}: not a readable .npz: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| fail(&e))?;
    let mut arrays = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| fail(&e))?;
        let Some(name) = entry.name().strip_suffix(".npy").map(str::to_string) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| fail(&e))?;
        let what = format!("{}:{name}", path.display());
        arrays.push((name, npy::from_bytes(&bytes, &what)?));
    }
    Ok(arrays)
}

/// `data` split along its first axis into samples of `input`'s type; `what` names it in errors.
fn split_rows(
    what: &str,
    data: &Tensor,
    input: &TensorType,
    limit: usize,
) -> Result<Vec<Tensor>, DriverError> {
    check_dtype(what, data, input)?;
    let dims = data.dims();
    let want = input.dims();
    // [S] + input dims, or [S] + input dims without a leading batch of 1.
    let per_sample: usize = want.iter().product();
    let matches_full = dims.len() == want.len() + 1 && dims[1..] == want[..];
    let matches_unbatched =
        want.first() == Some(&1) && dims.len() == want.len() && dims[1..] == want[1..];
    if !(matches_full || matches_unbatched) {
        return Err(DriverError::Other(format!(
            "--data {what}: holds {:?}; for the model input {} the file must be [samples, {}]",
            dims,
            input,
            want.iter()
                .skip(usize::from(want.first() == Some(&1)))
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let values = data
        .as_f32()
        .map_err(|e| DriverError::Other(format!("--data {what}: {e:?}")))?;
    let flat: Vec<f32> = values.iter().copied().collect();
    Ok(flat
        .chunks_exact(per_sample.max(1))
        .take(limit)
        .map(|chunk| Tensor::from_f32(want, chunk.to_vec()))
        .collect())
}

/// One sample per `.npy` file of the directory, in file-name order.
fn directory_samples(
    dir: &Path,
    input: &TensorType,
    limit: usize,
) -> Result<Vec<Tensor>, DriverError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DriverError::Other(format!("--data {}: {e}", dir.display())))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "npy"))
        .collect();
    files.sort();
    let want = input.dims();
    let mut samples = Vec::new();
    for file in files.into_iter().take(limit) {
        let t = npy::read(&file)?;
        check_dtype(&file.display().to_string(), &t, input)?;
        let unbatched = want.first() == Some(&1) && t.dims() == &want[1..];
        if t.dims() != want && !unbatched {
            return Err(DriverError::Other(format!(
                "--data {}: holds {:?}, the model input is {}",
                file.display(),
                t.dims(),
                input
            )));
        }
        let values: Vec<f32> = t
            .as_f32()
            .map_err(|e| DriverError::Other(format!("{}: {e:?}", file.display())))?
            .iter()
            .copied()
            .collect();
        samples.push(Tensor::from_f32(want, values));
    }
    Ok(samples)
}

fn check_dtype(what: &str, t: &Tensor, input: &TensorType) -> Result<(), DriverError> {
    if t.dtype() != DType::F32 || input.dtype != DType::F32 {
        return Err(DriverError::Other(format!(
            "--data {what}: holds {}, the model input is {}; calibration data must be float32",
            t.dtype().name(),
            input
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qcc_ir::Op;

    fn one_input_graph(dims: &[usize]) -> Graph {
        let mut g = Graph::new("g");
        let x = g
            .add_input("x", TensorType::new(DType::F32, dims.to_vec()))
            .unwrap();
        let n = g
            .add_node(
                "relu",
                Op::Activation(qcc_ir::Activation::Relu),
                vec![x],
                vec!["y".into()],
            )
            .unwrap();
        let y = g.node(n).outputs[0];
        g.set_outputs(vec![y]);
        g
    }

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qcc-calib-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_stacked_file_gives_one_sample_per_row_with_the_batch_axis_back() {
        let g = one_input_graph(&[1, 2, 3]);
        let dir = temp("stacked");
        let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let path = dir.join("data.npy");
        npy::write(&path, &Tensor::from_f32(&[4, 2, 3], data)).unwrap();
        let samples = load_samples(&g, &DataSource::Path(path.clone()), None).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[2][0].dims(), &[1, 2, 3]);
        let third: Vec<f32> = samples[2][0].as_f32().unwrap().iter().copied().collect();
        assert_eq!(third, (12..18).map(|i| i as f32).collect::<Vec<_>>());
        let limited = load_samples(&g, &DataSource::Path(path), Some(3)).unwrap();
        assert_eq!(limited.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_gives_one_sample_per_file_in_name_order() {
        let g = one_input_graph(&[1, 2]);
        let dir = temp("dir");
        for (name, v) in [("b.npy", 2.0), ("a.npy", 1.0), ("c.npy", 3.0)] {
            npy::write(&dir.join(name), &Tensor::from_f32(&[2], vec![v, v])).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let samples = load_samples(&g, &DataSource::Path(dir.clone()), None).unwrap();
        let firsts: Vec<f32> = samples
            .iter()
            .map(|s| s[0].as_f32().unwrap().iter().copied().next().unwrap())
            .collect();
        assert_eq!(firsts, vec![1.0, 2.0, 3.0]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wrong_shapes_and_types_name_the_file() {
        let g = one_input_graph(&[1, 2, 3]);
        let dir = temp("bad");
        let path = dir.join("wrong.npy");
        npy::write(&path, &Tensor::from_f32(&[4, 3, 2], vec![0.0; 24])).unwrap();
        let error = load_samples(&g, &DataSource::Path(path), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("wrong.npy") && error.contains("[samples, 2, 3]"),
            "{error}"
        );
        let ints = dir.join("ints.npy");
        npy::write(&ints, &Tensor::from_i64(&[4, 2, 3], vec![0; 24])).unwrap();
        let error = load_samples(&g, &DataSource::Path(ints), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("float32"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn synthetic_samples_are_seeded() {
        let g = one_input_graph(&[1, 4]);
        let source = DataSource::Synthetic { count: 3, seed: 9 };
        let a = load_samples(&g, &source, None).unwrap();
        let b = load_samples(&g, &source, None).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }

    /// A `.npz` archive as `numpy.savez_compressed` writes it: one deflated `.npy` per array.
    fn write_npz(path: &Path, arrays: &[(&str, Tensor)]) {
        let file = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, t) in arrays {
            zip.start_file(format!("{name}.npy"), options).unwrap();
            std::io::Write::write_all(&mut zip, &npy::to_bytes(t)).unwrap();
        }
        zip.finish().unwrap();
    }

    fn two_input_graph() -> Graph {
        let mut g = Graph::new("g");
        let a = g
            .add_input("a", TensorType::new(DType::F32, vec![1, 2]))
            .unwrap();
        let b = g
            .add_input("b", TensorType::new(DType::F32, vec![1, 3]))
            .unwrap();
        let n = g
            .add_node(
                "concat",
                Op::Concat { axis: 1 },
                vec![a, b],
                vec!["y".into()],
            )
            .unwrap();
        let y = g.node(n).outputs[0];
        g.set_outputs(vec![y]);
        g
    }

    #[test]
    fn an_archive_feeds_each_input_its_own_array_by_name() {
        let g = two_input_graph();
        let dir = temp("npz");
        let path = dir.join("calib.npz");
        let a = Tensor::from_f32(&[3, 2], (0..6).map(|i| i as f32).collect());
        let b = Tensor::from_f32(&[3, 3], (0..9).map(|i| 100.0 + i as f32).collect());
        // Stored in the other order than the graph's inputs: matched by name.
        write_npz(&path, &[("b", b), ("a", a)]);
        let samples = load_samples(&g, &DataSource::Path(path.clone()), Some(2)).unwrap();
        assert_eq!(samples.len(), 2);
        let values = |t: &Tensor| t.as_f32().unwrap().iter().copied().collect::<Vec<_>>();
        assert_eq!(values(&samples[1][0]), [2.0, 3.0]);
        assert_eq!(values(&samples[1][1]), [103.0, 104.0, 105.0]);
        assert_eq!(samples[1][1].dims(), &[1, 3]);

        // A missing input is named, with what the archive holds.
        let partial = dir.join("partial.npz");
        write_npz(&partial, &[("a", Tensor::from_f32(&[1, 2], vec![0.0; 2]))]);
        let error = load_samples(&g, &DataSource::Path(partial), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("'b'") && error.contains("holds: a"),
            "{error}"
        );

        // Arrays of different sample counts cannot pair up.
        let uneven = dir.join("uneven.npz");
        write_npz(
            &uneven,
            &[
                ("a", Tensor::from_f32(&[2, 2], vec![0.0; 4])),
                ("b", Tensor::from_f32(&[3, 3], vec![0.0; 9])),
            ],
        );
        let error = load_samples(&g, &DataSource::Path(uneven), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("different sample counts"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_single_input_takes_the_only_array_whatever_its_name() {
        let g = one_input_graph(&[1, 2]);
        let dir = temp("npz1");
        let path = dir.join("calib.npz");
        write_npz(&path, &[("arr_0", Tensor::from_f32(&[4, 2], vec![1.0; 8]))]);
        let samples = load_samples(&g, &DataSource::Path(path), None).unwrap();
        assert_eq!(samples.len(), 4);
        let garbage = dir.join("garbage.npz");
        std::fs::write(&garbage, b"not a zip").unwrap();
        let error = load_samples(&g, &DataSource::Path(garbage), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("garbage.npz") && error.contains(".npz"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
