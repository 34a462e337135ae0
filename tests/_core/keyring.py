"""Keys shared by the engine tests: generated once per (precision, p_error, norm2,
grouping factors searched)."""
import functools

from fheml._core import SecretKeys, select_parameters


@functools.lru_cache(maxsize=None)
def keys_for(precision, p_error=2.0**-40, norm2=1.0, grouping_factors=None):
    params = select_parameters(precision, p_error=p_error, norm2=norm2,
                               grouping_factors=grouping_factors)
    sk = SecretKeys.generate(params)
    return params, sk, sk.evaluation_keys()
