//! Dequantizers (f64): forward then reverse returns the original types and charges; `log q`
//! equals `log N(eps) - log |det dv/d eps|` with the Jacobian computed by autograd; the argmax
//! map keeps the true class the largest.

use egnn::Masks;
use flow::dequantize::dequantizer_egnn_config;
use flow::{Dequantizer, DequantizerKind};
use tch::{nn, Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);
const LOG_2PI: f64 = 1.837_877_066_409_345_5;

/// Two molecules (4 and 2 atoms, padded to 4): positions, one-hot types, atomic numbers, masks.
fn molecules() -> (Tensor, Tensor, Tensor, Masks) {
    let types = Tensor::from_slice(&[1i64, 0, 3, 2, 4, 0, 0, 0]).view([2, 4]);
    let z = Tensor::from_slice(&[6.0f64, 1.0, 8.0, 7.0, 9.0, 1.0, 0.0, 0.0]).view([2, 4, 1]);
    let node = Tensor::from_slice(&[1.0f64, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]).view([2, 4]);
    let one_hot = types.one_hot(5).to_kind(Kind::Double) * node.unsqueeze(-1);
    let x = geometry::centre(&Tensor::randn([2, 4, 3], OPTS), Some(&node)).unwrap();
    (x, one_hot, z, Masks::from_node_mask(&node))
}

fn dequantizer(kind: DequantizerKind, seed: i64) -> (nn::VarStore, Dequantizer) {
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let d = Dequantizer::new(&vs.root(), kind, 5, 1, &dequantizer_egnn_config()).unwrap();
    vs.set_kind(Kind::Double);
    // Parameters large enough that mu and log sigma vary over the nodes.
    egnn::testing::randomise_parameters(&vs, 0.1);
    (vs, d)
}

#[test]
fn forward_then_reverse_returns_types_and_charges() {
    let _guard = geometry::testing::seeded(11);
    for kind in [
        DequantizerKind::Uniform,
        DequantizerKind::Variational,
        DequantizerKind::ArgmaxVariational,
    ] {
        let (_vs, d) = dequantizer(kind, 1);
        for _ in 0..5 {
            let (x, one_hot, z, masks) = molecules();
            let deq = d.forward(&x, &one_hot, &z, &masks).unwrap();
            // Padded entries stay exactly zero.
            let pad = deq.v.narrow(0, 1, 1).narrow(1, 2, 2);
            assert_eq!(pad.abs().max().double_value(&[]), 0.0, "{kind:?}");
            let (c, i) = d.reverse(&deq.v, &masks.node).unwrap();
            assert!(c.equal(&one_hot), "{kind:?}: types changed");
            assert!(i.equal(&z), "{kind:?}: charges changed");
            assert!(deq.log_q.isfinite().all().int64_value(&[]) == 1);
        }
    }
}

#[test]
fn log_q_is_log_normal_minus_autograd_log_det() {
    let _guard = geometry::testing::seeded(12);
    for kind in [
        DequantizerKind::Variational,
        DequantizerKind::ArgmaxVariational,
    ] {
        let (_vs, d) = dequantizer(kind, 2);
        let (x, one_hot, z, masks) = molecules();
        let eps = d.draw_noise(&masks.node, Kind::Double).unwrap();
        let log_q = d
            .forward_with_noise(&x, &one_hot, &z, &masks, &eps)
            .unwrap()
            .log_q;
        // The map eps -> v of each molecule's real entries, differentiated column by column.
        let n_real = [4i64, 2];
        for (b, &m) in n_real.iter().enumerate() {
            let d_in = m * 6;
            let eps_b = eps.narrow(0, b as i64, 1).detach().set_requires_grad(true);
            let v_of = |e: &Tensor| {
                let full = Tensor::cat(
                    &[
                        eps.narrow(0, 0, b as i64),
                        e.shallow_clone(),
                        eps.narrow(0, b as i64 + 1, 1 - b as i64),
                    ],
                    0,
                );
                d.forward_with_noise(&x, &one_hot, &z, &masks, &full)
                    .unwrap()
                    .v
                    .narrow(0, b as i64, 1)
                    .narrow(1, 0, m)
                    .reshape([d_in])
            };
            let v = v_of(&eps_b);
            let mut rows = Vec::new();
            for k in 0..d_in {
                let g = Tensor::run_backward(&[v.get(k)], &[&eps_b], true, false);
                rows.push(g[0].narrow(1, 0, m).reshape([d_in]));
            }
            let jac = Tensor::stack(&rows, 0);
            let log_det = jac.det().abs().log().double_value(&[]);
            let e = eps.narrow(0, b as i64, 1).narrow(1, 0, m);
            let log_n =
                -0.5 * e.square().sum(Kind::Double).double_value(&[]) - 0.5 * d_in as f64 * LOG_2PI;
            let expected = log_n - log_det;
            let got = log_q.double_value(&[b as i64]);
            assert!(
                (got - expected).abs() < 1e-9 * (1.0 + expected.abs()),
                "{kind:?}, molecule {b}: log q {got} vs {expected}"
            );
        }
    }
}

#[test]
fn argmax_dequantization_keeps_the_true_class_largest() {
    let _guard = geometry::testing::seeded(13);
    let (_vs, d) = dequantizer(DequantizerKind::ArgmaxVariational, 3);
    for _ in 0..20 {
        let (x, one_hot, z, masks) = molecules();
        let v = d.forward(&x, &one_hot, &z, &masks).unwrap().v;
        let cat = v.narrow(-1, 0, 5);
        let truth = one_hot.argmax(-1, false);
        let real = masks.node.gt(0.5);
        let agree = cat
            .argmax(-1, false)
            .eq_tensor(&truth)
            .logical_or(&real.logical_not());
        assert!(agree.all().int64_value(&[]) == 1);
    }
}
