//! The QM9 E-NF's log-likelihood in f64 with the exact trace and fixed dequantization noise: a
//! padded batch of molecules of different sizes gives each molecule the value it has alone, and
//! the value is invariant to rotations, reflections, translations and permutations of its atoms.
//! The same model with GNF dynamics (the QM9 baselines) keeps the padding, translation and
//! permutation invariance but not the rotation invariance. Training steps lower the NLL, and
//! adjoint gradients equal backpropagation's.

use egnn::Masks;
use experiments::config::FlowMethod;
use experiments::qm9::{Qm9Batch, Qm9Model, Qm9ModelConfig};
use flow::{GradientMode, NodeCountDistribution, Probes};
use ode::OdeSolver;
use tch::{Device, Kind, Tensor};

const OPTS: (Kind, Device) = (Kind::Double, Device::Cpu);

/// One molecule: positions `[M, 3]`, one-hot types `[M, 5]`, atomic numbers `[M, 1]`, noise
/// `[M, 6]`.
struct Molecule {
    x: Tensor,
    one_hot: Tensor,
    z: Tensor,
    noise: Tensor,
}

fn molecule(m: i64) -> Molecule {
    let types = Tensor::randint(5, [m], (Kind::Int64, Device::Cpu));
    let z_of = Tensor::from_slice(&[1.0f64, 6.0, 7.0, 8.0, 9.0]);
    Molecule {
        x: Tensor::randn([m, 3], OPTS) * 1.5,
        one_hot: types.one_hot(5).to_kind(Kind::Double),
        z: z_of.index_select(0, &types).unsqueeze(-1),
        noise: Tensor::randn([m, 6], OPTS),
    }
}

/// Pads molecules into a batch and their noise likewise. Positions are NOT centred here: the
/// model must be translation invariant by itself (the flow centres its input).
fn batch(ms: &[&Molecule]) -> (Qm9Batch, Tensor) {
    let m_max = ms.iter().map(|m| m.x.size()[0]).max().unwrap();
    let pad = |t: &Tensor| {
        let (m, cols) = (t.size()[0], t.size()[1]);
        Tensor::cat(
            &[t.shallow_clone(), Tensor::zeros([m_max - m, cols], OPTS)],
            0,
        )
    };
    let stack = |f: &dyn Fn(&Molecule) -> Tensor| {
        Tensor::stack(&ms.iter().map(|m| pad(&f(m))).collect::<Vec<_>>(), 0)
    };
    let node = Tensor::stack(
        &ms.iter()
            .map(|m| pad(&Tensor::ones([m.x.size()[0], 1], OPTS)).squeeze_dim(-1))
            .collect::<Vec<_>>(),
        0,
    );
    let x = stack(&|m| m.x.shallow_clone());
    let b = Qm9Batch {
        x,
        one_hot: stack(&|m| m.one_hot.shallow_clone()),
        charges: stack(&|m| m.z.shallow_clone()),
        masks: Masks::from_node_mask(&node),
        rows: (0..ms.len()).collect(),
    };
    (b, stack(&|m| m.noise.shallow_clone()))
}

/// The paper's structure (attention, tanh, ActNorm, argmax dequantization) at width 16 and
/// depth 2 (the masking and training code is the same, the tests 20 times cheaper), in f64, with
/// dopri5 at `tol`.
fn small_model(tol: f64) -> Qm9Model {
    small_model_of(FlowMethod::Enf, tol)
}

/// [`small_model`] with the dynamics of `method` (E-NF or a GNF baseline).
fn small_model_of(method: FlowMethod, tol: f64) -> Qm9Model {
    let nodes = NodeCountDistribution::from_histogram(&[0, 0, 0, 1, 1, 2, 3]).unwrap();
    let mut config = Qm9ModelConfig {
        method,
        ..Qm9ModelConfig::default()
    };
    config.egnn.hidden_nf = 16;
    config.egnn.n_layers = 2;
    config.dequantizer_egnn.hidden_nf = 16;
    config.dequantizer_egnn.n_layers = 2;
    let mut model =
        Qm9Model::new(&config, nodes, OdeSolver::dopri5(tol, tol), Device::Cpu).unwrap();
    model.vs.set_kind(Kind::Double);
    model
}

fn model() -> Qm9Model {
    model_of(FlowMethod::Enf)
}

/// A [`small_model_of`] `method` at dopri5 1e-9 with parameters drawn from N(0, 0.1^2) (ActNorm
/// still uninitialised).
fn model_of(method: FlowMethod) -> Qm9Model {
    let model = small_model_of(method, 1e-9);
    egnn::testing::randomise_parameters(&model.vs, 0.1);
    model
}

/// Initialises the model's ActNorm (if any) from the batch of `ms` with their noise.
fn init_actnorm(model: &Qm9Model, ms: &[&Molecule]) {
    if let Some(actnorm) = &model.actnorm {
        let (init, noise) = batch(ms);
        let v = model
            .dequantizer
            .forward_with_noise(&init.x, &init.one_hot, &init.charges, &init.masks, &noise)
            .unwrap()
            .v;
        actnorm.initialize(&init.x, &v, &init.masks.node).unwrap();
    }
}

fn log_p(model: &Qm9Model, ms: &[&Molecule]) -> Vec<f64> {
    let (b, noise) = batch(ms);
    let ll = model
        .log_likelihood_with(&b, &noise, Probes::Exact, GradientMode::NoGrad)
        .unwrap();
    ll.log_p.try_into().unwrap()
}

#[test]
fn padded_batches_and_e3_transformations_leave_each_log_likelihood_unchanged() {
    let _guard = geometry::testing::seeded(21);
    let model = model();
    let (a, b, c) = (molecule(3), molecule(6), molecule(5));
    init_actnorm(&model, &[&a, &b, &c]);
    let together = log_p(&model, &[&a, &b, &c]);
    let alone: Vec<f64> = [&a, &b, &c]
        .iter()
        .map(|m| log_p(&model, &[m])[0])
        .collect();
    for (t, s) in together.iter().zip(&alone) {
        assert!(
            t.is_finite() && (t - s).abs() < 1e-6,
            "padded {t} vs alone {s}"
        );
    }

    // A random orthogonal map (a reflection included), a translation and a permutation of b.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let q = geometry::random_orthogonal_batch(1, 3, &mut rng)
        .squeeze_dim(0)
        .to_kind(Kind::Double);
    // Compose with a reflection so that the map is improper whatever q's determinant.
    let reflect = Tensor::from_slice(&[1.0f64, 1.0, -1.0]).diag(0);
    let q = if q.det().double_value(&[]) > 0.0 {
        q.matmul(&reflect)
    } else {
        q
    };
    let perm = Tensor::from_slice(&[4i64, 2, 0, 5, 1, 3]);
    let shift = Tensor::from_slice(&[3.0f64, -2.0, 0.5]);
    let moved = Molecule {
        x: (b.x.matmul(&q.tr()) + &shift).index_select(0, &perm),
        one_hot: b.one_hot.index_select(0, &perm),
        z: b.z.index_select(0, &perm),
        noise: b.noise.index_select(0, &perm),
    };
    let moved_lp = log_p(&model, &[&a, &moved, &c]);
    assert!((&moved.x - &b.x).abs().max().double_value(&[]) > 0.5);
    assert!(
        (moved_lp[1] - together[1]).abs() < 1e-6,
        "transformed {} vs {}",
        moved_lp[1],
        together[1]
    );

    // Control: moving one atom (not a rigid motion) does change the value.
    let mut push = vec![0.0f64; 18];
    push[0] = 0.3;
    let bent = Molecule {
        x: &b.x + Tensor::from_slice(&push).view([6, 3]),
        one_hot: b.one_hot.shallow_clone(),
        z: b.z.shallow_clone(),
        noise: b.noise.shallow_clone(),
    };
    let bent_lp = log_p(&model, &[&bent])[0];
    assert!(
        (bent_lp - alone[1]).abs() > 1e-3,
        "bent {bent_lp} vs {}",
        alone[1]
    );
}

#[test]
fn a_gnf_baseline_is_padding_translation_and_permutation_invariant_but_not_rotation_invariant() {
    let _guard = geometry::testing::seeded(23);
    let model = model_of(FlowMethod::GnfAtt);
    assert!(model
        .vs
        .variables()
        .keys()
        .any(|k| k.starts_with("dynamics.gnn.")));
    let (a, b, c) = (molecule(3), molecule(6), molecule(5));
    init_actnorm(&model, &[&a, &b, &c]);
    let together = log_p(&model, &[&a, &b, &c]);
    for (m, t) in [&a, &b, &c].iter().zip(&together) {
        let alone = log_p(&model, &[m])[0];
        assert!(
            t.is_finite() && (t - alone).abs() < 1e-6,
            "padded {t} vs alone {alone}"
        );
    }
    let perm = Tensor::from_slice(&[4i64, 2, 0, 5, 1, 3]);
    let shift = Tensor::from_slice(&[3.0f64, -2.0, 0.5]);
    let permuted = Molecule {
        x: (&b.x + &shift).index_select(0, &perm),
        one_hot: b.one_hot.index_select(0, &perm),
        z: b.z.index_select(0, &perm),
        noise: b.noise.index_select(0, &perm),
    };
    let lp = log_p(&model, &[&permuted])[0];
    assert!((lp - together[1]).abs() < 1e-6, "{lp} vs {}", together[1]);
    // A rotation about the centre changes a GNF's value (its dynamics see raw coordinates).
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(8);
    let q = geometry::random_rotation_batch(1, 3, &mut rng).squeeze_dim(0);
    let rotated = Molecule {
        x: b.x.matmul(&q.tr()),
        one_hot: b.one_hot.shallow_clone(),
        z: b.z.shallow_clone(),
        noise: b.noise.shallow_clone(),
    };
    let lp = log_p(&model, &[&rotated])[0];
    assert!((lp - together[1]).abs() > 1e-4, "{lp} vs {}", together[1]);
}

#[test]
fn training_steps_lower_the_nll_of_a_small_model() {
    use experiments::qm9::train::{
        qm9_optimizer, qm9_train_step, GradientClipper, Qm9TrainOptions,
    };
    let _guard = geometry::testing::seeded(22);
    let model = small_model(1e-4);
    let ms: Vec<Molecule> = [3, 5, 4, 5].into_iter().map(molecule).collect();
    let (b, _) = batch(&ms.iter().collect::<Vec<_>>());
    let options = Qm9TrainOptions {
        lr: 5e-3,
        ..Qm9TrainOptions::default()
    };
    let mut opt = qm9_optimizer(&model, &options);
    let mut clipper = GradientClipper::default();
    let nll: Vec<f64> = (0..30)
        .map(|_| {
            let r = qm9_train_step(&model, &mut opt, &mut clipper, &b, &options).unwrap();
            assert!(r.regulariser > 0.0 && r.grad_norm.is_finite() && r.nfe > 0);
            r.nll
        })
        .collect();
    assert!(model.actnorm.as_ref().unwrap().is_initialized());
    let first: f64 = nll[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = nll[25..].iter().sum::<f64>() / 5.0;
    eprintln!("NLL first 5 steps {first:.2}, last 5 {last:.2}: {nll:?}");
    assert!(last < first - 2.0, "NLL {first} -> {last}");
}

#[test]
fn adjoint_training_gradients_equal_backprop_gradients() {
    use experiments::qm9::train::adjoint_gradients;
    use flow::{Noise, TraceEstimator};
    let _guard = geometry::testing::seeded(23);
    let model = model();
    let ms: Vec<Molecule> = [3, 5, 4].into_iter().map(molecule).collect();
    let (b, noise) = batch(&ms.iter().collect::<Vec<_>>());
    let v = tch::no_grad(|| {
        model
            .dequantizer
            .forward_with_noise(&b.x, &b.one_hot, &b.charges, &b.masks, &noise)
    })
    .unwrap()
    .v;
    model
        .actnorm
        .as_ref()
        .unwrap()
        .initialize(&b.x, &v, &b.masks.node)
        .unwrap();
    let eps = match TraceEstimator::Hutchinson(Noise::Gaussian).probes(
        &[3, 5, 9],
        &b.masks.node,
        Kind::Double,
        Device::Cpu,
    ) {
        Probes::Hutchinson(eps) => eps,
        Probes::Exact => unreachable!(),
    };
    let mut named: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = named.iter().map(|(_, v)| v.shallow_clone()).collect();
    let lambda = 0.05;

    // Backpropagation through the solver.
    let terms = model
        .training_terms(&b, &noise, Probes::Hutchinson(eps.shallow_clone()))
        .unwrap();
    let nll = -terms.log_p.mean(Kind::Double);
    let loss = &nll + terms.regulariser.as_ref().unwrap().mean(Kind::Double) * lambda;
    let backprop = Tensor::run_backward(&[&loss], &params, false, false);

    // The adjoint, through the dequantizer and ActNorm by the flow's input gradients.
    let adjoint = adjoint_gradients(
        &model,
        &b,
        &noise,
        Probes::Hutchinson(eps.shallow_clone()),
        &params,
        lambda,
    )
    .unwrap();
    let nll_b = nll.double_value(&[]);
    assert!(
        (adjoint.nll - nll_b).abs() < 1e-7 * nll_b.abs(),
        "{} vs {nll_b}",
        adjoint.nll
    );
    assert!(adjoint.regulariser > 0.0);
    let (mut compared, mut dequantizer) = (0, 0);
    for (((name, _), g_b), g_a) in named
        .iter()
        .zip(&backprop)
        .zip(&adjoint.grads)
        .filter(|((_, g), _)| g.defined())
    {
        let g_a = g_a
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no adjoint gradient"));
        let scale = g_b.abs().max().double_value(&[]);
        let err = (g_a - g_b).abs().max().double_value(&[]);
        // Both approximate the exact gradient to about the solver tolerance (1e-9).
        assert!(
            err <= 1e-5 * scale.max(1e-8),
            "{name}: {err} against {scale}"
        );
        compared += 1;
        dequantizer += usize::from(name.starts_with("dequantizer"));
    }
    assert!(
        compared > 20 && dequantizer > 5,
        "{compared} compared, {dequantizer} of the dequantizer"
    );
}
