//! Forward-mode derivatives of the E-NF dynamics (in f64): `EgnnDynamics::velocity_jvp`'s tangent
//! equals the Jacobian-vector product autograd computes by reverse mode, for particle systems and
//! for padded batches with node features, every option of the layer (attention, tanh, mean
//! aggregation, no time conditioning) covered, tangents at padded nodes included; its velocity is
//! the plain forward pass's, bit for bit; the tangent is the same with and without an autograd
//! graph; tangents of the wrong shape are typed errors. The same for the GNF baselines'
//! `GnnDynamics` (with and without attention, with padded node features).

use egnn::testing::randomise_parameters;
use egnn::{
    Aggregation, Dynamics, EgnnConfig, EgnnDynamics, EgnnError, GnnDynamics, Masks, Velocity,
};
use geometry::testing::seeded;
use tch::{nn::VarStore, Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// `J u` by reverse mode: with `w` a dummy cotangent, `g(w) = w^T J` is linear in `w`, and the
/// gradient of `<g(w), u>` with respect to `w` is `J u` (the "double vector-Jacobian" trick).
/// `x`, `h` and the tangents `dx`, `dh` are the inputs; returns `(J u)_x`, `(J u)_h`.
// `a = a + b` on purpose: `+=` would be libtorch's in-place op inside the autograd graph.
#[allow(clippy::assign_op_pattern)]
fn jvp_by_reverse_mode<D: Dynamics>(
    d: &D,
    t: f64,
    x: &Tensor,
    h: Option<&Tensor>,
    dx: &Tensor,
    dh: Option<&Tensor>,
    masks: &Masks,
) -> (Tensor, Option<Tensor>) {
    let x = x.detach().set_requires_grad(true);
    let h = h.map(|h| h.detach().set_requires_grad(true));
    let v = d.velocity(t, &x, h.as_ref(), masks).unwrap();
    let wx = v.x.zeros_like().set_requires_grad(true);
    let wh =
        v.h.as_ref()
            .map(|vh| vh.zeros_like().set_requires_grad(true));
    let mut pairing = (&v.x * &wx).sum(Kind::Double);
    let mut inputs = vec![x.shallow_clone()];
    if let (Some(vh), Some(wh), Some(h)) = (&v.h, &wh, &h) {
        pairing = pairing + (vh * wh).sum(Kind::Double);
        inputs.push(h.shallow_clone());
    }
    let g = Tensor::run_backward(&[pairing], &inputs, true, true);
    let mut inner = (&g[0] * dx).sum(Kind::Double);
    let mut cotangents = vec![wx.shallow_clone()];
    if let (Some(gh), Some(dh), Some(wh)) = (g.get(1), dh, &wh) {
        inner = inner + (gh * dh).sum(Kind::Double);
        cotangents.push(wh.shallow_clone());
    }
    let mut ju = Tensor::run_backward(&[inner], &cotangents, false, false).into_iter();
    let jx = ju.next().unwrap();
    (jx, ju.next())
}

/// Largest |a - b| relative to the largest |b|.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-300);
    (a - b).abs().max().double_value(&[]) / scale
}

fn dynamics(config: &EgnnConfig, node_nf: i64, std: f64) -> (VarStore, EgnnDynamics) {
    let mut vs = VarStore::new(Device::Cpu);
    let d = EgnnDynamics::new(vs.root(), config, node_nf).unwrap();
    vs.set_kind(Kind::Double);
    randomise_parameters(&vs, std);
    (vs, d)
}

/// Both derivatives are exact formulas evaluated in f64: they differ by round-off (measured
/// 1e-16 to 2e-15 relative here); 1e-12 leaves a margin for other libtorch builds while any
/// wrong term of the chain rule gives an O(1e-2) or larger error.
const TOLERANCE: f64 = 1e-12;

#[test]
fn particle_system_tangent_is_the_jacobian_vector_product() {
    let _rng = seeded(11);
    for (attention, tanh) in [(true, true), (false, false)] {
        let config = EgnnConfig {
            attention,
            tanh,
            ..Default::default()
        };
        let (_vs, d) = dynamics(&config, 0, 0.3);
        check_particle_case(&d, &format!("attention {attention}, tanh {tanh}"));
    }
}

/// A particle system (three graphs of 4 nodes in 2 dimensions, no features) for dynamics `d`:
/// the velocity of `velocity_jvp` is the plain one bit for bit, its tangent the reverse-mode
/// Jacobian-vector product (not trivially small), and neither has a feature part.
fn check_particle_case<D: Dynamics>(d: &D, label: &str) {
    let x = Tensor::randn([3, 4, 2], F64) * 1.5;
    let dx = Tensor::randn([3, 4, 2], F64);
    let masks = Masks::full(3, 4, Kind::Double, Device::Cpu);
    let (v, dv) = d
        .velocity_jvp(0.3, &x, None, &dx, None, &masks)
        .unwrap()
        .unwrap();
    let plain = d.velocity(0.3, &x, None, &masks).unwrap();
    assert_eq!(
        relative_error(&v.x, &plain.x),
        0.0,
        "{label}: velocity changed"
    );
    assert!(v.h.is_none() && dv.h.is_none(), "{label}");
    let (jx, _) = jvp_by_reverse_mode(d, 0.3, &x, None, &dx, None, &masks);
    let err = relative_error(&dv.x, &jx);
    assert!(err < TOLERANCE, "{label}: error {err:e}");
    assert!(
        jx.abs().max().double_value(&[]) > 1e-3,
        "{label}: trivial Jacobian"
    );
}

#[test]
fn padded_batch_with_features_tangent_is_the_jacobian_vector_product() {
    let _rng = seeded(12);
    for (aggregation, condition_time) in [(Aggregation::Sum, true), (Aggregation::Mean, false)] {
        let config = EgnnConfig {
            aggregation,
            condition_time,
            ..Default::default()
        };
        let (_vs, d) = dynamics(&config, 3, 0.3);
        // Graphs of 5, 3 and 4 nodes padded to 5.
        let node_mask = Tensor::from_slice(&[
            1.0f64, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        ])
        .view([3, 5]);
        check_padded_case(&d, 0.7, &node_mask, 3, 3, &format!("{aggregation:?}"));
    }
}

/// A padded batch with node features for dynamics `d` over `n_dims` dimensions and `nf` features
/// (`node_mask [batch, nodes]`), with tangents nonzero at padded nodes too (the exact trace's unit
/// vectors are): the velocity of `velocity_jvp` is the plain one bit for bit, its tangent the
/// reverse-mode Jacobian-vector product (not trivially small) and zero at padded nodes.
fn check_padded_case<D: Dynamics>(
    d: &D,
    t: f64,
    node_mask: &Tensor,
    n_dims: i64,
    nf: i64,
    label: &str,
) -> PaddedCase {
    let size = node_mask.size();
    let (b, m) = (size[0], size[1]);
    let masks = Masks::from_node_mask(node_mask);
    let node = node_mask.unsqueeze(-1);
    let x = geometry::centre(&(Tensor::randn([b, m, n_dims], F64) * 1.5), Some(node_mask)).unwrap();
    let h = Tensor::randn([b, m, nf], F64) * &node;
    let dx = Tensor::randn([b, m, n_dims], F64);
    let dh = Tensor::randn([b, m, nf], F64);
    let (v, dv) = d
        .velocity_jvp(t, &x, Some(&h), &dx, Some(&dh), &masks)
        .unwrap()
        .unwrap();
    let plain = d.velocity(t, &x, Some(&h), &masks).unwrap();
    assert_eq!(relative_error(&v.x, &plain.x), 0.0, "{label}");
    assert_eq!(
        relative_error(v.h.as_ref().unwrap(), plain.h.as_ref().unwrap()),
        0.0,
        "{label}"
    );
    let (jx, jh) = jvp_by_reverse_mode(d, t, &x, Some(&h), &dx, Some(&dh), &masks);
    let jh = jh.unwrap();
    for (what, ours, reference) in [("x", &dv.x, &jx), ("h", dv.h.as_ref().unwrap(), &jh)] {
        let err = relative_error(ours, reference);
        assert!(err < TOLERANCE, "{label}, {what}: error {err:e}");
        let scale = reference.abs().max().double_value(&[]);
        assert!(scale > 1e-3, "{label}, {what}: trivial Jacobian {scale}");
    }
    // Padded nodes: zero tangent, as their velocity is zero.
    let padded = node.ones_like() - &node;
    for t in [&dv.x, dv.h.as_ref().unwrap()] {
        assert_eq!((t * &padded).abs().max().double_value(&[]), 0.0, "{label}");
    }
    PaddedCase {
        x,
        h,
        dx,
        dh,
        masks,
        plain,
        dv,
    }
}

/// The inputs and results of [`check_padded_case`].
struct PaddedCase {
    x: Tensor,
    h: Tensor,
    dx: Tensor,
    dh: Tensor,
    masks: Masks,
    plain: Velocity,
    dv: Velocity,
}

#[test]
fn tangent_without_a_graph_equals_the_differentiable_one() {
    // Without autograd the SiLU tangent is libtorch's fused kernel, with it a composition of
    // differentiable operations: the same values up to round-off.
    let _rng = seeded(14);
    let (_vs, d) = dynamics(&EgnnConfig::default(), 0, 0.3);
    let x = Tensor::randn([3, 4, 2], F64) * 1.5;
    let dx = Tensor::randn([3, 4, 2], F64);
    let masks = Masks::full(3, 4, Kind::Double, Device::Cpu);
    let (_, with_graph) = d
        .velocity_jvp(0.3, &x, None, &dx, None, &masks)
        .unwrap()
        .unwrap();
    assert!(with_graph.x.requires_grad());
    let (_, without) = tch::no_grad(|| d.velocity_jvp(0.3, &x, None, &dx, None, &masks))
        .unwrap()
        .unwrap();
    assert!(!without.x.requires_grad());
    let err = relative_error(&without.x, &with_graph.x);
    assert!(err < TOLERANCE, "error {err:e}");
}

#[test]
fn tangents_of_the_wrong_shape_are_refused() {
    let _rng = seeded(13);
    let (_vs, d) = dynamics(&EgnnConfig::default(), 0, 0.3);
    let masks = Masks::full(2, 4, Kind::Double, Device::Cpu);
    let x = Tensor::randn([2, 4, 2], F64);
    let dx = Tensor::randn([2, 4, 3], F64);
    let err = d
        .velocity_jvp(0.0, &x, None, &dx, None, &masks)
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, EgnnError::Shape { ref got, .. } if got == &vec![2, 4, 3]),
        "{err}"
    );
    // A feature tangent for a particle system (no features) is refused, not ignored.
    let dh = Tensor::randn([2, 4, 1], F64);
    let dx = Tensor::randn([2, 4, 2], F64);
    let err = d
        .velocity_jvp(0.0, &x, None, &dx, Some(&dh), &masks)
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, EgnnError::Shape { what, .. } if what.contains("features")),
        "{err}"
    );
}

fn gnn(config: &EgnnConfig, n_dims: i64, node_nf: i64) -> (VarStore, GnnDynamics) {
    let mut vs = VarStore::new(Device::Cpu);
    let d = GnnDynamics::with_features(vs.root(), config, n_dims, node_nf).unwrap();
    vs.set_kind(Kind::Double);
    randomise_parameters(&vs, 0.3);
    (vs, d)
}

#[test]
fn gnf_tangent_is_the_jacobian_vector_product() {
    let _rng = seeded(15);
    // A particle system (every node real) with and without attention.
    for attention in [true, false] {
        let config = EgnnConfig {
            attention,
            ..Default::default()
        };
        let (_vs, d) = gnn(&config, 2, 0);
        check_particle_case(&d, &format!("GNF, attention {attention}"));
    }
    // Padded graphs (4, 2 and 3 real nodes of 4) with node features, attention, no time.
    let config = EgnnConfig {
        attention: true,
        condition_time: false,
        ..Default::default()
    };
    let (_vs, d) = gnn(&config, 3, 2);
    let node_mask = Tensor::from_slice(&[
        1.0f64, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0,
    ])
    .view([3, 4]);
    let PaddedCase {
        x,
        h,
        dx,
        dh,
        masks,
        plain,
        dv,
    } = check_padded_case(&d, 0.6, &node_mask, 3, 2, "GNF, padded");
    let dvh = dv.h.as_ref().unwrap();
    // The parameters require gradients, so the pass above built a graph (training's branch of
    // the SiLU tangent); without one (evaluation, sampling) the fused kernels give the same
    // tangent up to round-off and the same velocity bit for bit.
    assert!(dv.x.requires_grad());
    let (v_ng, dv_ng) = tch::no_grad(|| d.velocity_jvp(0.6, &x, Some(&h), &dx, Some(&dh), &masks))
        .unwrap()
        .unwrap();
    assert!(!dv_ng.x.requires_grad());
    assert_eq!(relative_error(&v_ng.x, &plain.x), 0.0);
    for (what, ours, reference) in [
        ("x", &dv_ng.x, &dv.x),
        ("h", dv_ng.h.as_ref().unwrap(), dvh),
    ] {
        let err = relative_error(ours, reference);
        assert!(err < TOLERANCE, "without a graph, {what}: error {err:e}");
    }
    // No feature tangent is a zero one.
    let (_, dv_x_only) = d
        .velocity_jvp(0.6, &x, Some(&h), &dx, None, &masks)
        .unwrap()
        .unwrap();
    let (jx0, _) = jvp_by_reverse_mode(&d, 0.6, &x, Some(&h), &dx, Some(&dh.zeros_like()), &masks);
    let err = relative_error(&dv_x_only.x, &jx0);
    assert!(err < TOLERANCE, "dh = None: error {err:e}");
    // Tangents of the wrong shape are refused.
    let err = d
        .velocity_jvp(0.6, &x, Some(&h), &dx, Some(&dh.narrow(-1, 0, 1)), &masks)
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, EgnnError::Shape { ref got, .. } if got == &vec![3, 4, 1]),
        "{err}"
    );
}
