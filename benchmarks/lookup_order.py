"""Keyswitch-first (the engine's order) against bootstrap-first, by the selector's model.

    python benchmarks/lookup_order.py

KS-first: ciphertexts live under the big key (k*N); a lookup is keyswitch -> modulus switch
-> blind rotation, and a linear combination of 2-norm nu feeds it, so the lookup's input
variance is nu^2*Var_PBS + Var_KS + Var_MS.  PBS-first: ciphertexts live under the small key
(n), the keyswitch follows each bootstrap, and the combination multiplies both:
nu^2*(Var_PBS + Var_KS) + Var_MS.  For each (p, nu) the selector's search
(parameters._search_bootstrap, same space, variance tables and time model) finds the fastest
set under each order; both are printed.
"""
from fheml._core import parameters


def fastest(p, log2_p_error, nu, bootstrap_first):
    """(ms per lookup by the time model, the set's (k, N, g, n, pbs level, ks level))."""
    found = parameters._search_bootstrap(p, parameters._max_variance(p, log2_p_error), nu,
                                         bootstrap_first=bootstrap_first)
    ms = (parameters.time_pbs(found["lwe_dimension"], found["glwe_dimension"],
                              found["polynomial_size"], found["pbs_level"],
                              found["grouping_factor"])
          + parameters.time_ks(found["glwe_dimension"] * found["polynomial_size"],
                               found["lwe_dimension"], found["ks_level"])) * 1e3
    return ms, tuple(found[key] for key in ("glwe_dimension", "polynomial_size",
                                            "grouping_factor", "lwe_dimension", "pbs_level",
                                            "ks_level"))


def main():
    print("# p_error 2^-40; set = (k, N, g, n, pbs level, ks level)")
    for p in (2, 4, 6):
        for nu in (1, 4, 16):
            ks_ms, ks_set = fastest(p, -40, nu, False)
            pbs_ms, pbs_set = fastest(p, -40, nu, True)
            print(f"p={p} nu={nu}: KS-first {ks_ms:.1f} ms {ks_set}  PBS-first {pbs_ms:.1f} ms "
                  f"{pbs_set}  ({pbs_ms / ks_ms:.2f}x)")


if __name__ == "__main__":
    main()
