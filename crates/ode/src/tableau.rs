//! Butcher tableaux of explicit Runge-Kutta methods: the methods are data, driven by one stepper.

use serde::{Deserialize, Serialize};

/// An explicit Runge-Kutta method `(c, A, b)` with an optional embedded error estimator.
///
/// Stage i is evaluated at `t + c[i] h` on `y + h sum_j a[i][j] k_j`; the step's solution is
/// `y + h sum_i b[i] k_i`; its error estimate is `h sum_i b_error[i] k_i` with `b_error = b - b_hat`
/// (b_hat the embedded lower-order weights). With `fsal` (first same as last) the last stage is
/// evaluated on the new solution itself, so it is the next step's first stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ButcherTableau {
    /// The method's name in the literature ("dopri5", ...).
    pub name: &'static str,
    /// Order of the propagated solution.
    pub order: u32,
    /// Nodes c, one per stage.
    pub c: &'static [f64],
    /// Strictly lower-triangular coefficients: row i has i entries.
    pub a: &'static [&'static [f64]],
    /// Weights of the solution, one per stage.
    pub b: &'static [f64],
    /// `b - b_hat` for adaptive methods, one per stage.
    pub b_error: Option<&'static [f64]>,
    /// Whether the last stage equals f at the new solution.
    pub fsal: bool,
}

impl ButcherTableau {
    /// Number of stages.
    pub fn stages(&self) -> usize {
        self.c.len()
    }

    /// Whether the method has an embedded error estimate (adaptive step size).
    pub fn is_adaptive(&self) -> bool {
        self.b_error.is_some()
    }

    /// Checks the tableau's consistency: shapes, row sums `sum_j a[i][j] = c[i]`, `sum b = 1`,
    /// `sum b_error = 0`, and for FSAL methods that the last row of A equals b and `c = 1`.
    pub fn consistency_error(&self) -> Option<String> {
        let s = self.stages();
        if self.a.len() != s || self.b.len() != s || self.b_error.is_some_and(|e| e.len() != s) {
            return Some(format!("{}: inconsistent stage counts", self.name));
        }
        for (i, row) in self.a.iter().enumerate() {
            if row.len() != i {
                return Some(format!(
                    "{}: row {i} of A has {} entries",
                    self.name,
                    row.len()
                ));
            }
            let sum: f64 = row.iter().sum();
            if (sum - self.c[i]).abs() > 1e-12 {
                return Some(format!(
                    "{}: row {i} of A sums to {sum}, c = {}",
                    self.name, self.c[i]
                ));
            }
        }
        if (self.b.iter().sum::<f64>() - 1.0).abs() > 1e-12 {
            return Some(format!("{}: weights do not sum to 1", self.name));
        }
        if let Some(e) = self.b_error {
            if e.iter().sum::<f64>().abs() > 1e-12 {
                return Some(format!("{}: error weights do not sum to 0", self.name));
            }
        }
        if self.fsal
            && (self.a[s - 1] != &self.b[..s - 1] || self.c[s - 1] != 1.0 || self.b[s - 1] != 0.0)
        {
            return Some(format!(
                "{}: FSAL but the last row of A is not b",
                self.name
            ));
        }
        None
    }
}

/// The methods this crate provides, by their usual names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Forward Euler, order 1, fixed step.
    Euler,
    /// Explicit midpoint, order 2, fixed step.
    Midpoint,
    /// Classic Runge-Kutta, order 4, fixed step.
    Rk4,
    /// Bogacki-Shampine 3(2), FSAL, adaptive.
    Bosh3,
    /// Dormand-Prince 5(4), FSAL, adaptive (the reference's solver).
    #[default]
    Dopri5,
    /// Tsitouras 5(4), FSAL, adaptive: dopri5's cost per step with smaller error constants.
    Tsit5,
}

impl Method {
    /// Every method, in order of increasing order.
    pub const ALL: [Method; 6] = [
        Method::Euler,
        Method::Midpoint,
        Method::Rk4,
        Method::Bosh3,
        Method::Dopri5,
        Method::Tsit5,
    ];
}

impl Method {
    /// The method's tableau.
    pub fn tableau(self) -> &'static ButcherTableau {
        match self {
            Method::Euler => &EULER,
            Method::Midpoint => &MIDPOINT,
            Method::Rk4 => &RK4,
            Method::Bosh3 => &BOSH3,
            Method::Dopri5 => &DOPRI5,
            Method::Tsit5 => &TSIT5,
        }
    }
}

/// Forward Euler.
pub const EULER: ButcherTableau = ButcherTableau {
    name: "euler",
    order: 1,
    c: &[0.0],
    a: &[&[]],
    b: &[1.0],
    b_error: None,
    fsal: false,
};

/// Explicit midpoint rule.
pub const MIDPOINT: ButcherTableau = ButcherTableau {
    name: "midpoint",
    order: 2,
    c: &[0.0, 0.5],
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
    b_error: None,
    fsal: false,
};

/// The classic fourth-order Runge-Kutta method.
pub const RK4: ButcherTableau = ButcherTableau {
    name: "rk4",
    order: 4,
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    b_error: None,
    fsal: false,
};

/// Bogacki & Shampine (1989), "A 3(2) pair of Runge-Kutta formulas", Appl. Math. Lett. 2(4).
pub const BOSH3: ButcherTableau = ButcherTableau {
    name: "bosh3",
    order: 3,
    c: &[0.0, 0.5, 0.75, 1.0],
    a: &[
        &[],
        &[0.5],
        &[0.0, 0.75],
        &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0],
    ],
    b: &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0],
    b_error: Some(&[
        2.0 / 9.0 - 7.0 / 24.0,
        1.0 / 3.0 - 0.25,
        4.0 / 9.0 - 1.0 / 3.0,
        -0.125,
    ]),
    fsal: true,
};

/// dopri5's fifth-order weights; FSAL: they are also the last row of its A.
const DOPRI5_B: [f64; 7] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
    0.0,
];

/// Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", J. Comp. Appl. Math. 6(1);
/// coefficients as in Hairer, Norsett & Wanner, "Solving ODEs I", table II.5.2.
pub const DOPRI5: ButcherTableau = ButcherTableau {
    name: "dopri5",
    order: 5,
    c: &[0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[],
        &[0.2],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        DOPRI5_B.split_at(6).0,
    ],
    b: &DOPRI5_B,
    b_error: Some(&[
        35.0 / 384.0 - 5179.0 / 57600.0,
        0.0,
        500.0 / 1113.0 - 7571.0 / 16695.0,
        125.0 / 192.0 - 393.0 / 640.0,
        -2187.0 / 6784.0 + 92097.0 / 339200.0,
        11.0 / 84.0 - 187.0 / 2100.0,
        -1.0 / 40.0,
    ]),
    fsal: true,
};

/// tsit5's fifth-order weights; FSAL: they are also the last row of its A.
const TSIT5_B: [f64; 7] = [
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
];

/// Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying
/// assumption", Comput. Math. Appl. 62(2), table 1, with the embedded weights of its section 3
/// (the coefficients to 16 digits, as the paper gives them).
pub const TSIT5: ButcherTableau = ButcherTableau {
    name: "tsit5",
    order: 5,
    c: &[0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0],
    a: &[
        &[],
        &[0.161],
        &[-0.008480655492356989, 0.335480655492357],
        &[2.897153057105493, -6.359448489975075, 4.3622954328695815],
        &[
            5.325864828439257,
            -11.748883564062828,
            7.4955393428898365,
            -0.09249506636175525,
        ],
        &[
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ],
        TSIT5_B.split_at(6).0,
    ],
    b: &TSIT5_B,
    b_error: Some(&[
        -0.001780011052225777,
        -0.0008164344596567469,
        0.007880878010261995,
        -0.1447110071732629,
        0.5823571654525552,
        -0.45808210592918697,
        1.0 / 66.0,
    ]),
    fsal: true,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tableau_is_consistent() {
        for m in Method::ALL {
            assert_eq!(m.tableau().consistency_error(), None);
        }
    }
}
