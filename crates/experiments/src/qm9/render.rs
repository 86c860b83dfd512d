//! Pictures of molecules (PNG, with plotters): a ball-and-stick orthographic view of each
//! molecule, atoms in CPK colours sized by element, bonds where the stability rule finds one
//! ([`datasets::qm9::bond_order`]; double and triple bonds drawn thicker), atoms drawn back to
//! front. Several molecules go on a grid.

use std::path::Path;

use datasets::qm9::{bond_order, Molecule};
use datasets::Element;
use plotters::prelude::*;

use crate::error::ExperimentError;

/// CPK-like colour and drawn radius (pixels at scale 1) of an element.
fn style(e: Element) -> (RGBColor, f64) {
    match e {
        Element::H => (RGBColor(230, 230, 230), 0.55),
        Element::C => (RGBColor(80, 80, 80), 0.8),
        Element::N => (RGBColor(50, 80, 230), 0.8),
        Element::O => (RGBColor(230, 40, 40), 0.8),
        Element::F => (RGBColor(60, 200, 60), 0.75),
    }
}

/// Renders `molecules` on a grid of `columns` cells of `cell` x `cell` pixels into the PNG file
/// `path`. Each molecule is centred and scaled to fill its cell, seen along the z axis after
/// rotating it so that its two largest principal axes lie in the picture plane.
///
/// Errors: [`ExperimentError::Model`] naming the problem (no molecules, unknown elements,
/// non-finite positions, a drawing failure).
pub fn render_png(
    path: &Path,
    molecules: &[Molecule],
    columns: usize,
    cell: u32,
) -> Result<(), ExperimentError> {
    let fail = |e: String| ExperimentError::Model(format!("rendering {}: {e}", path.display()));
    if molecules.is_empty() || columns == 0 {
        return Err(fail("nothing to draw".into()));
    }
    if let Some(k) = molecules
        .iter()
        .position(|m| m.positions.len() != 3 * m.n_atoms())
    {
        return Err(fail(format!(
            "molecule {k} does not have 3 positions per atom"
        )));
    }
    let rows = molecules.len().div_ceil(columns);
    let size = (cell * columns as u32, cell * rows as u32);
    // Drawn into a partial file (with a .png extension, which the encoder needs), then renamed.
    let partial = path.with_extension(format!("partial.{}.png", std::process::id()));
    let result = draw(&partial, molecules, columns, cell, size)
        .map_err(fail)
        .and_then(|()| datasets::atomic::finish_atomic(&partial, path).map_err(Into::into));
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Draws the grid into the PNG file `path`.
fn draw(
    path: &Path,
    molecules: &[Molecule],
    columns: usize,
    cell: u32,
    size: (u32, u32),
) -> Result<(), String> {
    let fail = |e: String| e;
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    for (k, m) in molecules.iter().enumerate() {
        let (cx, cy) = (
            (k % columns) as f64 * f64::from(cell),
            (k / columns) as f64 * f64::from(cell),
        );
        let elements: Vec<Element> = m
            .atomic_numbers
            .iter()
            .map(|&z| {
                Element::from_atomic_number(z).ok_or_else(|| fail(format!("atomic number {z}")))
            })
            .collect::<Result<_, _>>()?;
        if m.positions.iter().any(|v| !v.is_finite()) {
            return Err(fail(format!("molecule {k} has non-finite positions")));
        }
        let p = principal_view(&m.positions);
        let extent = p
            .iter()
            .map(|q| q[0].abs().max(q[1].abs()))
            .fold(1e-6f64, f64::max);
        let scale = 0.40 * f64::from(cell) / (extent + 0.8);
        let to_px = |q: &[f64; 3]| {
            (
                (cx + 0.5 * f64::from(cell) + scale * q[0]) as i32,
                (cy + 0.5 * f64::from(cell) - scale * q[1]) as i32,
            )
        };
        for i in 0..p.len() {
            for j in i + 1..p.len() {
                let d = ((0..3)
                    .map(|a| (m.positions[3 * i + a] - m.positions[3 * j + a]).powi(2))
                    .sum::<f32>() as f64)
                    .sqrt();
                let order = bond_order(elements[i], elements[j], d);
                if order > 0 {
                    let stroke =
                        ShapeStyle::from(&RGBColor(120, 120, 120)).stroke_width(2 * order as u32);
                    root.draw(&PathElement::new(vec![to_px(&p[i]), to_px(&p[j])], stroke))
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
        }
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[a][2].total_cmp(&p[b][2]));
        for i in order {
            let (colour, r) = style(elements[i]);
            let radius = (r * scale * 0.45).max(3.0) as i32;
            root.draw(&Circle::new(to_px(&p[i]), radius, colour.filled()))
                .map_err(|e| fail(e.to_string()))?;
            root.draw(&Circle::new(to_px(&p[i]), radius, BLACK.stroke_width(1)))
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    root.present().map_err(|e| fail(e.to_string()))
}

/// Positions `[M * 3]` centred and expressed in the eigenbasis of their covariance (largest
/// variance first), by Jacobi rotations of the 3 x 3 covariance.
fn principal_view(x: &[f32]) -> Vec<[f64; 3]> {
    let m = x.len() / 3;
    let mut mean = [0f64; 3];
    for i in 0..m {
        for a in 0..3 {
            mean[a] += f64::from(x[3 * i + a]) / m as f64;
        }
    }
    let c: Vec<[f64; 3]> = (0..m)
        .map(|i| std::array::from_fn(|a| f64::from(x[3 * i + a]) - mean[a]))
        .collect();
    let mut cov = [[0f64; 3]; 3];
    for q in &c {
        for a in 0..3 {
            for b in 0..3 {
                cov[a][b] += q[a] * q[b];
            }
        }
    }
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _ in 0..50 {
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if cov[p][q].abs() < 1e-12 {
                continue;
            }
            let theta = 0.5 * (2.0 * cov[p][q]).atan2(cov[q][q] - cov[p][p]);
            let (s, co) = theta.sin_cos();
            for row in cov.iter_mut() {
                let (a, b) = (row[p], row[q]);
                row[p] = co * a - s * b;
                row[q] = s * a + co * b;
            }
            let (rp, rq) = (cov[p], cov[q]);
            cov[p] = std::array::from_fn(|k| co * rp[k] - s * rq[k]);
            cov[q] = std::array::from_fn(|k| s * rp[k] + co * rq[k]);
            for row in v.iter_mut() {
                let (a, b) = (row[p], row[q]);
                row[p] = co * a - s * b;
                row[q] = s * a + co * b;
            }
        }
    }
    let mut axes = [0usize, 1, 2];
    axes.sort_by(|&a, &b| cov[b][b].total_cmp(&cov[a][a]));
    c.iter()
        .map(|q| std::array::from_fn(|k| (0..3).map(|a| q[a] * v[a][axes[k]]).sum()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_view_puts_the_long_axis_first_and_keeps_distances() {
        // A rod along z with a small offset along x.
        let x = [0.0f32, 0.0, -2.0, 0.1, 0.0, 0.0, 0.0, 0.0, 2.0];
        let p = principal_view(&x);
        assert!((p[2][0] - p[0][0]).abs() > 3.9);
        let d = |a: &[f64; 3], b: &[f64; 3]| {
            ((0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f64>()).sqrt()
        };
        assert!((d(&p[0], &p[2]) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn renders_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        let water = Molecule {
            atomic_numbers: vec![8, 1, 1],
            positions: vec![
                0.0, 0.0, 0.1173, 0.0, 0.7572, -0.4692, 0.0, -0.7572, -0.4692,
            ],
        };
        render_png(&path, &[water.clone(), water], 2, 120).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(render_png(&path, &[], 2, 120).is_err());
    }
}
