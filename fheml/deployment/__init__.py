"""Deploy a model: save it, then run a client and a server that exchange bytes.

>>> from fheml.deployment import FHEModelDev, FHEModelClient, FHEModelServer
>>> FHEModelDev("deploy/", model).save()                                # doctest: +SKIP
>>> client = FHEModelClient("deploy/", key_dir="keys/")                 # doctest: +SKIP
>>> keys = client.get_serialized_evaluation_keys()                      # doctest: +SKIP
>>> answer = FHEModelServer("deploy/").run(client.quantize_encrypt_serialize(X), keys)
...                                                                     # doctest: +SKIP
>>> client.deserialize_decrypt_dequantize(answer)                       # doctest: +SKIP

:class:`HTTPClient` talks to ``fheml serve`` (see :mod:`fheml.deployment.http_server`).
"""

from fheml.deployment.families import register_family
from fheml.deployment.fhe_client_server import (
    ARTIFACT_VERSION,
    FHEModelClient,
    FHEModelDev,
    FHEModelServer,
    ModelMismatchError,
)

__all__ = ["ARTIFACT_VERSION", "FHEModelClient", "FHEModelDev", "FHEModelServer",
           "ModelMismatchError", "register_family"]
