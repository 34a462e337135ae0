"""Compiled circuits: parameter choice, the three run modes, client and server.

The client holds the secret keys; the server holds only the :class:`ServerSpec` (the
program, no secret) and the evaluation keys.  Everything crossing between them is bytes in
the versioned, checksummed format of :mod:`fheml._core.serialization` (JSON header + raw
arrays, no pickle).
"""

import dataclasses
import math

import numpy as np

from fheml.compiler.graph import TracingError, range_bits
from fheml.compiler.lowering import MAX_LOOKUP_BITS, too_wide_error
from fheml._progress import progress
from fheml.compiler.packed import (
    FirstLayerPlan,
    PackedPlan,
    packed_plan_from_dict,
    plan_first_layer,
    plan_packing,
)
from fheml.compiler.program import (
    ClearBackend,
    InputRangeError,
    Program,
    run_clear,
    run_encrypted,
)

__all__ = ["Circuit", "Client", "ClientSpec", "EncryptedArgs", "EncryptedResult", "Server",
           "ServerLimits", "ServerSpec"]

MAX_PRECISION_NO_BOOTSTRAP = 30


# ------------------------------------------------------------------- finalization ------

def _partitions(program):
    """Partition id of every encrypted node: values joined by linear operations share one.

    A lookup starts a new partition (its output can be encoded at another precision than its
    input: the bootstrap writes it afresh), so each partition gets its own encoding
    precision: the wide accumulator of a first layer does not force the narrow outputs of a
    later one to be decrypted at its width.
    """
    parent = list(range(len(program.nodes)))

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for k, node in enumerate(program.nodes):
        if node.encrypted and node.op != "tlu":
            for i in node.inputs:
                if program.nodes[i].encrypted:
                    parent[find(i)] = find(k)
    return {k: find(k) for k, node in enumerate(program.nodes) if node.encrypted}


def finalize(program, input_specs, p_error=None, global_p_error=None, grouping_factors=None):
    """Choose the encoding precisions, each lookup's read precision and the parameters.

    Every partition of the program (encrypted values joined by linear operations, see
    :func:`_partitions`) is encoded at the precision of its widest value that must be exact:
    encrypted inputs, lookup inputs (plus the bits ``round_bit_pattern`` removes) and outputs.
    Sets ``program.precision`` (the widest), the ``precision`` of every encrypted node, the
    ``pin``/``premul`` attributes of every lookup, the precision and offset of every
    encrypted input spec; returns the selected :class:`~fheml._core.ParameterSet` and the
    per-lookup failure probability targeted.  ``grouping_factors`` limits the blind
    rotations searched (see :func:`~fheml._core.select_parameters`; ``(1,)``: classic,
    the smallest keys).
    """
    from fheml._core.parameters import _max_variance, log2_p_fail, select_parameters

    lookups = program.lookups
    part = _partitions(program)
    needs = {}  # partition -> bits of its widest value that must be exact

    def need(k, bits):
        needs[part[k]] = max(needs.get(part[k], 1), bits)

    for spec, k in zip(input_specs, program.input_nodes):
        if spec["encrypted"]:
            program.nodes[k].attrs["lo"] = spec["lo"]
            need(k, range_bits(spec["lo"], spec["hi"]))
    for node in lookups:
        n_idx = node.attrs["tables"].shape[1]
        node.attrs["index_bits"] = max(1, (n_idx - 1).bit_length())
        need(node.inputs[0], node.attrs["index_bits"] + node.attrs["shift"])
    for k in program.output_nodes:
        need(k, range_bits(*program.nodes[k].safe_bounds))
    # Inputs are encrypted at the widest precision (what ``client.spec.precision`` says), so
    # a client encrypting at it is right whatever the partitions.
    P = max(needs.values())
    for spec, k in zip(input_specs, program.input_nodes):
        if spec["encrypted"]:
            needs[part[k]] = P
    for k, node in enumerate(program.nodes):
        node.precision = needs.get(part[k], 1) if node.encrypted else None
    for spec, k in zip(input_specs, program.input_nodes):
        if spec["encrypted"]:
            spec["precision"] = program.nodes[k].precision
    program.precision = P

    lookup_bits = max((n.attrs["index_bits"] for n in lookups), default=0)
    if lookup_bits > MAX_LOOKUP_BITS:
        worst = max(lookups, key=lambda n: n.attrs["index_bits"])
        raise too_wide_error(worst.where, "a lookup", worst.attrs["index_bits"])
    count = sum(int(np.prod(n.shape, dtype=np.int64)) for n in lookups)
    if p_error is None and global_p_error is None:
        p_error = 2.0 ** -40
    if global_p_error is not None:
        if not 0.0 < global_p_error < 1.0:
            raise ValueError(f"global_p_error must be in (0, 1), got {global_p_error!r}")
        per = -math.expm1(math.log1p(-global_p_error) / max(1, count))
        p_error = per if p_error is None else min(p_error, per)
    if not 0.0 < p_error < 1.0:
        raise ValueError(f"p_error must be in (0, 1), got {p_error!r}")

    # A fresh encryption has norm 1: whatever the client encrypts must decrypt too, even when
    # an output does not depend on the inputs (all-zero weights).
    outputs = [(max(program.nodes[k].nu, 1.0), program.nodes[k].precision)
               for k in program.output_nodes]
    if not lookups:
        if P > MAX_PRECISION_NO_BOOTSTRAP:
            k = max(program.output_nodes, key=lambda k: range_bits(*program.nodes[k].safe_bounds))
            raise ValueError(
                f"the output computed at {program.nodes[k].where} needs {P} bits, more than "
                f"the {MAX_PRECISION_NO_BOOTSTRAP} bits a circuit without lookups can decrypt; "
                "lower the bit width of the inputs or weights")
        return select_parameters(P, p_error, max(nu for nu, _ in outputs),
                                 bootstrap=False), p_error

    program.assign_stages()
    nu = nu_all = 1.0
    for node in lookups:
        shift, p_in = node.attrs["shift"], program.nodes[node.inputs[0]].precision
        pin = min(p_in - shift, lookup_bits)
        node.attrs["pin"] = pin
        node.attrs["premul"] = 1 << (p_in - shift - pin)
        norm = program.nodes[node.inputs[0]].nu * node.attrs["premul"]
        nu_all = max(nu_all, norm)
        if not _fed_by_fresh_encryptions(program, node):
            nu = max(nu, norm)
    # Outputs are decrypted at their partition's precision: the bootstrap output noise
    # (times the norm of the weights after the last lookups) must allow it.
    log2_p = math.log2(p_error)
    max_variance_pbs = min(_max_variance(p_k, log2_p) / nu_k ** 2 for nu_k, p_k in outputs)
    for precision in range(lookup_bits, MAX_LOOKUP_BITS + 1):
        params = select_parameters(precision, p_error, nu, bootstrap=True,
                                   max_variance_pbs=max_variance_pbs,
                                   grouping_factors=grouping_factors)
        if params is not None and any(lookup_p_fail(program, n, params) > p_error
                                      for n in lookups):
            # lookups of fresh inputs are noisier than those sets allow: count them as
            # bootstrap outputs (a bound on their noise)
            params = select_parameters(precision, p_error, nu_all, bootstrap=True,
                                       max_variance_pbs=max_variance_pbs,
                                       grouping_factors=grouping_factors)
        if params is None:
            continue
        if all(log2_p_fail(nu_k ** 2 * params.variance_output, p_k) <= log2_p + 1e-9
               for nu_k, p_k in outputs):
            return params, p_error
    # Nothing fits: say whether the lookups alone are impossible (too large a norm feeding
    # them: select_parameters explains) or only the outputs are.
    select_parameters(lookup_bits, p_error, nu, bootstrap=True,
                      grouping_factors=grouping_factors)
    raise ValueError(
        f"no parameters decrypt the outputs at {max(p for _, p in outputs)} bits with "
        f"p_error={p_error:.3g}; lower the bit width of the outputs (or the norm of the "
        "weights that compute them) or raise p_error")


def _fed_by_fresh_encryptions(program, lookup):
    """Whether no lookup precedes ``lookup``: its input is then a linear combination of
    fresh encryptions only (stage 0), whose noise is ``big_noise_std``, far below a
    bootstrap output's."""
    return program.nodes[lookup.inputs[0]].stage == 0


def lookup_noise_std(program, lookup, params):
    """Standard deviation (torus units) of the noise at the decision of ``lookup``.

    The input's noise is ν·premul times a bootstrap output's noise, or times the noise
    of a fresh encryption (plus ``program.input_variance``) when only fresh encryptions
    feed it; the keyswitch and the modulus switch add theirs.
    """
    norm = program.nodes[lookup.inputs[0]].nu * lookup.attrs["premul"]
    if _fed_by_fresh_encryptions(program, lookup):
        variance = (norm ** 2 * (params.big_noise_std ** 2 + program.input_variance)
                    + params.variance_ks + params.variance_ms)
    else:
        variance = params.variance_at_lookup(norm)
    return math.sqrt(variance)


def lookup_p_fail(program, lookup, params):
    """Modelled failure probability of one element of ``lookup`` under ``params`` (noise
    of :func:`lookup_noise_std` beyond half a box of its read precision)."""
    from fheml._core.parameters import log2_p_fail

    return 2.0 ** log2_p_fail(lookup_noise_std(program, lookup, params) ** 2,
                              lookup.attrs["pin"])


def simulation_noise(program, params):
    """``{lookup node: noise std in units of its input message}`` for simulation: a box of
    the lookup (``2**-(pin + 1)`` of the torus) spans ``2**shift`` input units."""
    return {k: lookup_noise_std(program, n, params) * 2.0 ** (n.attrs["pin"] + 1
                                                               + n.attrs["shift"])
            for k, n in enumerate(program.nodes) if n.op == "tlu"}


def statistics(program, params, p_error):
    """Summary dict of a finalized program (see :attr:`Circuit.statistics`)."""
    lookups = program.lookups
    by_precision = {}
    log_ok = 0.0
    for n in lookups:
        size = int(np.prod(n.shape, dtype=np.int64))
        pin = n.attrs["pin"]
        by_precision[pin] = by_precision.get(pin, 0) + size
        p = lookup_p_fail(program, n, params)
        log_ok += size * math.log1p(-min(p, 1 - 1e-16))
    count = sum(by_precision.values())
    if not lookups:
        # Nothing but the decryptions can fail: one per output value, each at p_fail of
        # the set (selected for the outputs' noise).
        outputs = sum(int(np.prod(program.nodes[k].shape, dtype=np.int64))
                      for k in program.output_nodes)
        log_ok = outputs * math.log1p(-min(params.p_fail(), 1 - 1e-16))
    return {
        "lookups": count,
        "lookups_by_precision": dict(sorted(by_precision.items())),
        "levels": program.assign_stages(),
        "precision": program.precision,
        "lookup_precision": params.precision if lookups else 0,
        "estimated_cost": count * params.cost,
        "p_error": p_error,
        "global_p_error": -math.expm1(log_ok),
        "key_sizes": {
            "bootstrapping_key": params.bsk_bytes, "keyswitching_key": params.ksk_bytes,
            "seeded_bootstrapping_key": params.seeded_bsk_bytes,
            "seeded_keyswitching_key": params.seeded_ksk_bytes,
        },
        "linear_nodes": sum(1 for n in program.nodes if n.encrypted and n.op != "tlu"),
    }


# ------------------------------------------------------------------------ specs --------

def _check_args(inputs, args, *, check_range=True):
    """Validate call arguments against input specs; return batched arrays and the flag."""
    names = [s["name"] for s in inputs]
    if len(args) != len(inputs):
        raise TypeError(f"the circuit takes {len(inputs)} argument(s) ({', '.join(names)}), "
                        f"got {len(args)}")
    batched = None
    out = []
    for spec, arg in zip(inputs, args):
        a = np.asarray(arg)
        shape = tuple(spec["shape"])
        if a.shape == shape:
            is_batched = False
            a = a[None]
        elif a.shape[1:] == shape and a.ndim == len(shape) + 1:
            is_batched = True
        else:
            raise ValueError(f"argument {spec['name']!r} has shape {a.shape}; the circuit was "
                             f"compiled for shape {shape} (or a batch of them, "
                             f"{('n',) + shape})".replace("'n'", "n"))
        if batched is not None and is_batched != batched:
            raise ValueError("either all arguments have a leading batch axis or none has")
        batched = is_batched
        if spec["encrypted"]:
            if a.dtype == bool:
                a = a.astype(np.int64)
            if not np.issubdtype(a.dtype, np.integer):
                if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) \
                        and np.all(a == np.round(a)):
                    a = a.astype(np.int64)
                else:
                    raise TypeError(f"encrypted argument {spec['name']!r} must hold integers "
                                    "(quantize floats first)")
            a = a.astype(np.int64)
            if check_range and a.size and (a.min() < spec["lo"] or a.max() > spec["hi"]):
                raise InputRangeError(
                    f"argument {spec['name']!r} has values in [{a.min()}, {a.max()}], outside "
                    f"the range [{spec['lo']}, {spec['hi']}] of the inputset the circuit was "
                    "compiled with; results would be wrong. Compile with an inputset covering "
                    "these values (or clip the inputs).")
        elif check_range:
            _check_clear_range(spec, a)
        out.append(a)
    if len({a.shape[0] for a in out}) > 1:
        raise ValueError("all arguments must have the same batch size")
    return out, bool(batched)


def _check_clear_range(spec, batch):
    """A clear runtime argument (batch axis first) must stay inside the elementwise range it
    had in the inputset: the circuit's bounds and noise were computed for that range, and an
    encrypted run could not tell it went wrong."""
    if "clear_lo" not in spec or batch.size == 0:
        return
    lo, hi = np.asarray(spec["clear_lo"]), np.asarray(spec["clear_hi"])
    b = batch.astype(np.int64) if batch.dtype == bool else batch
    if np.any(b < lo) or np.any(b > hi):
        raise InputRangeError(
            f"clear argument {spec['name']!r} has values outside the elementwise range it had in "
            f"the inputset the circuit was compiled with (overall [{lo.min()}, {hi.max()}]); an "
            "encrypted run would be silently wrong. Compile with an inputset covering these "
            "values.")


def _spec_header(params, program, inputs, outputs, multiple):
    return {"params": params.to_dict(), "precision": program.precision, "inputs": inputs,
            "outputs": outputs, "multiple_outputs": multiple}


def _params_from(header, kind):
    from fheml._core.keys import params_from_header
    return params_from_header(header, kind)


class ClientSpec:
    """What the client needs: parameters, precision, input ranges and output offsets, and
    the layout of the packed path (``packed``, a weightless :class:`PackedPlan` or
    :class:`FirstLayerPlan`) if any."""

    def __init__(self, params, precision, inputs, outputs, multiple_outputs, packed=None):
        self.params = params
        self.precision = int(precision)
        self.inputs = inputs
        self.outputs = outputs
        self.multiple_outputs = bool(multiple_outputs)
        self.packed = packed

    def to_bytes(self):
        from fheml._core.serialization import pack
        header = {"params": self.params.to_dict(), "precision": self.precision,
                  "inputs": self.inputs, "outputs": self.outputs,
                  "multiple_outputs": self.multiple_outputs}
        if self.packed is not None:
            header["packed"] = self.packed.to_dict()
        return pack("client-spec", header)

    @classmethod
    def from_bytes(cls, data):
        """Load a client spec (it comes from the server: everything is validated).

        Raises
        ------
        fheml._core.SerializationError
        """
        from fheml._core.serialization import peer_data, unpack
        header, _ = unpack(data, "client-spec")
        with peer_data("client-spec"):
            params = _params_from(header, "client-spec")
            precision = header["precision"]
            if isinstance(precision, bool) or not isinstance(precision, int) \
                    or not 1 <= precision <= 62:
                raise ValueError("precision must be an integer in 1..62")
            packed = packed_plan_from_dict(header["packed"], params) if "packed" in header \
                else None
            if packed is not None and packed.precision != precision:
                raise ValueError("the packed plan's precision differs from the circuit's")
            return cls(params, precision, _validate_io(header["inputs"], True),
                       _validate_io(header["outputs"]), _json_bool(header["multiple_outputs"]),
                       packed)


class ServerSpec:
    """What the server needs: parameters and the program (tables included, no secret), and
    the packed plan (``packed``, weights read off the program) if any."""

    def __init__(self, params, program, inputs, outputs, multiple_outputs, packed=None):
        self.params = params
        self.program = program
        self.inputs = inputs
        self.outputs = outputs
        self.multiple_outputs = bool(multiple_outputs)
        self.packed = packed

    def to_bytes(self, include_source=False):
        """Serialize.

        Parameters
        ----------
        include_source : bool, default=False
            Keep the user's source lines in the program (for error messages on the
            server).  Off by default: the artifact a server receives should not carry the
            compiling user's code.
        """
        from fheml._core.serialization import pack
        header, arrays = self.program.to_json(include_source=include_source)
        spec = {"params": self.params.to_dict(), "program": header, "inputs": self.inputs,
                "outputs": self.outputs, "multiple_outputs": self.multiple_outputs}
        if self.packed is not None:
            spec["packed"] = self.packed.to_dict()
        return pack("server-spec", spec, arrays)

    @classmethod
    def from_bytes(cls, data):
        """Load and validate a server spec (ops, attributes, shapes; see
        :meth:`Program.from_json`).

        Raises
        ------
        fheml._core.SerializationError
        """
        from fheml._core.serialization import peer_data, unpack
        header, arrays = unpack(data, "server-spec")
        with peer_data("server-spec"):
            params = _params_from(header, "server-spec")
            program = Program.from_json(header["program"], arrays)
            inputs = _validate_io(header["inputs"], True)
            outputs = _validate_io(header["outputs"])
            _check_io_against_program(program, inputs, outputs)
            _check_program_against_params(program, params)
            packed = None
            if "packed" in header:
                plan = packed_plan_from_dict(header["packed"], params)
                packed = type(plan).with_weights_of(plan, program)
            return cls(params, program, inputs, outputs, _json_bool(header["multiple_outputs"]),
                       packed)


def _json_bool(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected a boolean, got {type(value).__name__}")
    return value


def _json_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or not -2**62 <= value < 2**62:
        raise ValueError(f"{name} must be an integer in [-2^62, 2^62)")
    return value


_IO_FIELDS = frozenset({"name", "encrypted", "shape", "lo", "hi", "clear_lo", "clear_hi",
                        "precision"})


def _validate_io(items, inputs=False):
    """Input or output descriptions of a spec: types, shapes and ranges."""
    if not isinstance(items, list) or len(items) > 1 << 12:
        raise ValueError("expected a list of input/output descriptions")
    for it in items:
        if not isinstance(it, dict) or set(it) - _IO_FIELDS:
            raise ValueError("bad input/output description")
        shape = it.get("shape")
        if not isinstance(shape, list) or len(shape) > 32 or any(
                isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 1 << 31
                for s in shape):
            raise ValueError("bad shape")
        if math.prod(shape) > 1 << 31:
            raise ValueError("shape too large")
        if "precision" in it and not 1 <= _json_int(it["precision"], "precision") <= 62:
            raise ValueError("precision must be in 1..62")
        if not inputs:
            _json_int(it.get("lo"), "output lo")
            continue
        if not isinstance(it.get("name"), str) or not isinstance(it.get("encrypted"), bool):
            raise ValueError("bad input description")
        if it["encrypted"]:
            if _json_int(it.get("lo"), "input lo") > _json_int(it.get("hi"), "input hi"):
                raise ValueError("input range is empty")
        elif "clear_lo" in it or "clear_hi" in it:
            for key in ("clear_lo", "clear_hi"):
                a = np.asarray(it.get(key))
                if a.shape != tuple(shape) or a.dtype.kind not in "iuf":
                    raise ValueError(f"bad {key}")
    return items


def _check_io_against_program(program, inputs, outputs):
    if len(inputs) != len(program.input_nodes) or len(outputs) != len(program.output_nodes):
        raise ValueError("inputs/outputs do not match the program")
    for spec, k in zip(inputs, program.input_nodes):
        node = program.nodes[k]
        if spec["encrypted"] != node.encrypted or tuple(spec["shape"]) != node.shape or (
                node.encrypted and spec.get("precision", program.precision) != node.precision):
            raise ValueError(f"input {spec['name']!r} does not match the program")
    for spec, k in zip(outputs, program.output_nodes):
        node = program.nodes[k]
        if tuple(spec["shape"]) != node.shape or spec.get("precision", program.precision) \
                != node.precision:
            raise ValueError("an output does not match the program")


def _check_program_against_params(program, params):
    """The lookups and the encoding precision must be ones the parameters can run."""
    from fheml._core.parameters import log2_p_fail
    lookups = program.lookups
    if lookups and not params.has_bootstrap:
        raise ValueError("the program has lookups but the parameters no bootstrap")
    if any(n.attrs["pin"] > params.precision for n in lookups):
        raise ValueError(f"a lookup reads more than the {params.precision} bits of the "
                         "parameters")
    # Fresh encryptions and lookup outputs are the unit noise sources; each must carry the
    # precision of the partition it starts (see finalize).
    for node in program.nodes:
        if node.op in ("enc_input", "tlu"):
            variance = params.big_noise_std ** 2 + program.input_variance \
                if node.op == "enc_input" else params.variance_pbs
            if log2_p_fail(variance, node.precision) > math.log2(params.p_error) + 1e-9:
                raise ValueError(f"the parameters cannot carry {node.precision}-bit messages")


class EncryptedArgs:
    """Encrypted (and clear) arguments of one call, ready for :meth:`Server.run`.

    Attributes
    ----------
    values : list
        Per argument: an :class:`~fheml._core.LweCiphertext` of shape ``(b, *shape)`` or a
        clear array ``(b, *shape)``; on the packed path the one argument is a
        :class:`~fheml._core.GlweCiphertext` of shape ``(groups, chunks)``.
    batched : bool
        Whether the caller passed a leading batch axis.
    rows : int or None
        Rows of a packed argument (None on the LWE path).
    """

    def __init__(self, values, batched, rows=None):
        self.values = list(values)
        self.batched = bool(batched)
        self.rows = rows

    def to_bytes(self):
        from fheml._core.keys import LweCiphertext
        from fheml._core.serialization import pack
        if self.rows is not None:
            return _pack_packed("circuit-args", self.values, self.batched, self.rows)
        items, arrays = [], []
        for v in self.values:
            if isinstance(v, LweCiphertext):
                # fresh encryptions travel as mask seed + bodies
                meta, (array,) = v.to_parts()
                items.append({"encrypted": True, **meta})
                arrays.append(array)
            else:
                v = np.asarray(v)
                items.append({"encrypted": False, "bool": v.dtype == bool})
                arrays.append(v.astype(np.uint8) if v.dtype == bool else
                              v.astype(np.float64 if v.dtype.kind == "f" else np.int64))
        return pack("circuit-args", {"items": items, "batched": self.batched}, arrays)

    @classmethod
    def from_bytes(cls, data, *, spec=None, key_id=None, limits=None):
        """Load the arguments of one call.

        Parameters
        ----------
        data : bytes
        spec : ServerSpec, optional
            When given (as :meth:`Server.run` does), every argument is checked against
            the circuit (count, kind, shape, ciphertext dimension) and ``limits`` before
            any seeded mask is expanded.
        key_id : str, optional
            Key id every ciphertext must carry.
        limits : ServerLimits, optional
            Defaults to ``ServerLimits()``.

        Raises
        ------
        fheml._core.SerializationError
            Malformed bytes, or arguments that do not fit the circuit;
            :class:`~fheml._core.LimitExceededError` (a subclass) when a limit is exceeded.
        """
        from fheml._core.serialization import peer_data, unpack
        limits = ServerLimits() if limits is None else limits
        limits.check_request_bytes(len(data))
        header, arrays = unpack(data, "circuit-args")
        if "packed" in header:
            return cls(*_unpack_packed("circuit-args", header, arrays, spec, key_id, limits))
        with peer_data("circuit-args"):
            items = header["items"]
            if not isinstance(items, list) or len(items) != len(arrays) \
                    or not all(isinstance(it, dict) for it in items):
                raise ValueError("item count does not match the arrays")
            batched = _json_bool(header["batched"])
            if spec is not None:
                _check_args_against_spec(spec, items, arrays, batched, limits)
            values = [_arg_from_item(it, a, key_id, limits) for it, a in zip(items, arrays)]
            return cls(values, batched)


def _arg_from_item(item, array, key_id, limits):
    from fheml._core.keys import LweCiphertext
    if _json_bool(item.get("encrypted")):
        return LweCiphertext.from_parts(item, [array], expected_key_id=key_id,
                                        max_expanded_bytes=limits.max_expanded_bytes)
    if set(item) - {"encrypted", "bool"}:
        raise ValueError("unknown fields in a clear argument")
    if _json_bool(item.get("bool", False)):
        if array.dtype != np.uint8 or (array.size and array.max() > 1):
            raise ValueError("a boolean argument must be 0/1 bytes")
        return array.astype(bool)
    if array.dtype not in (np.int64, np.float64):
        raise ValueError("a clear argument must be int64 or float64")
    if array.dtype == np.float64 and not np.all(np.isfinite(array)):
        raise ValueError("a clear argument holds NaN or infinity")
    return array


def _check_args_against_spec(spec, items, arrays, batched, limits):
    """Everything about the arguments the header tells, before any expansion."""
    from fheml._core.serialization import MismatchError
    inputs = spec.inputs
    if len(items) != len(inputs):
        raise MismatchError(f"circuit-args: the circuit takes {len(inputs)} argument(s), "
                                 f"got {len(items)}")
    dim = spec.params.big_lwe_dimension
    rows, expanded = None, 0
    for it, a, s in zip(items, arrays, inputs):
        shape = tuple(s["shape"])
        encrypted = it.get("encrypted")
        if encrypted is not s["encrypted"]:
            raise MismatchError(f"circuit-args: argument {s['name']!r} must be "
                                     f"{'encrypted' if s['encrypted'] else 'clear'}")
        seeded = encrypted and "mask_seed" in it
        sample = a.shape[1:] if not encrypted or seeded else a.shape[1:-1]
        if a.ndim < 1 or tuple(sample) != shape or (encrypted and not seeded and (
                a.ndim < 2 or a.shape[-1] != dim + 1)):
            raise MismatchError(f"circuit-args: argument {s['name']!r} does not have the "
                                     f"compiled shape {shape} (after the batch axis)")
        if encrypted and it.get("dimension") != dim:
            raise MismatchError(f"circuit-args: argument {s['name']!r} has ciphertext "
                                     f"dimension {it.get('dimension')!r}, expected {dim}")
        if rows is not None and a.shape[0] != rows:
            raise MismatchError("circuit-args: all arguments must have the same batch size")
        rows = a.shape[0]
        if encrypted:
            expanded += math.prod(a.shape[:1] + shape) * (dim + 1) * 8
    if not batched and rows not in (None, 1):
        raise MismatchError("circuit-args: an unbatched call has one sample")
    limits.check_rows(rows or 0)
    limits.check_expanded_bytes(expanded)


class EncryptedResult:
    """Encrypted outputs of one call: one ciphertext batch per output, or on the packed path
    one :class:`~fheml._core.GlweCiphertext` ``(groups, outputs)`` and the row count."""

    def __init__(self, values, batched, rows=None):
        self.values = list(values)
        self.batched = bool(batched)
        self.rows = rows

    def to_bytes(self):
        from fheml._core.serialization import pack
        if self.rows is not None:
            return _pack_packed("circuit-result", self.values, self.batched, self.rows)
        return pack("circuit-result", {"key_id": [v.key_id for v in self.values],
                                       "batched": self.batched}, [v.data for v in self.values])

    @classmethod
    def from_bytes(cls, data):
        """Load a result (it comes from the server: validated).

        Raises
        ------
        fheml._core.SerializationError
        """
        from fheml._core.keys import LweCiphertext
        from fheml._core.serialization import peer_data, unpack
        header, arrays = unpack(data, "circuit-result")
        if "packed" in header:
            return cls(*_unpack_packed("circuit-result", header, arrays))
        with peer_data("circuit-result"):
            key_ids = header["key_id"]
            if not isinstance(key_ids, list) or len(key_ids) != len(arrays) or not all(
                    isinstance(k, str) for k in key_ids):
                raise ValueError("key id count does not match the arrays")
            if any(a.dtype != np.uint64 or a.ndim < 2 for a in arrays):
                raise ValueError("outputs must be uint64 ciphertext batches")
            return cls([LweCiphertext(a, k) for a, k in zip(arrays, key_ids)],
                       _json_bool(header["batched"]))


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """Bounds on what one request may make a :class:`Server` do.

    A request over a limit raises :class:`~fheml._core.LimitExceededError` (a
    :class:`~fheml._core.SerializationError`) naming the limit, before the work or the
    memory it would cost.  ``None`` disables a limit.

    Parameters
    ----------
    max_request_bytes : int or None, default=1 GiB
        Size of serialized arguments.  (Serialized evaluation keys have the size the
        circuit's parameters imply: larger ones are refused as ``"evaluation_key_bytes"``.)
    max_batch_rows : int or None, default=65536
        Samples in one call.
    max_expanded_bytes : int or None, default=4 GiB
        Bytes of the argument ciphertexts once their seeded masks are expanded:
        ``rows * values per sample * (dimension + 1) * 8``.  A seeded ciphertext travels
        as one body word, so this is what bounds the ``dimension + 1`` amplification.
    """

    max_request_bytes: int = 1 << 30
    max_batch_rows: int = 1 << 16
    max_expanded_bytes: int = 1 << 32

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f"{field.name} must be a non-negative integer or None, "
                                 f"got {value!r}")

    def _check(self, name, value, what=""):
        from fheml._core.serialization import LimitExceededError
        maximum = getattr(self, name)
        if maximum is not None and value > maximum:
            raise LimitExceededError(name, value, maximum, what)

    def check_request_bytes(self, size):
        """Raise LimitExceededError if a serialized request is too large."""
        self._check("max_request_bytes", size)

    def check_rows(self, rows):
        """Raise LimitExceededError if a call has too many samples."""
        self._check("max_batch_rows", rows)

    def check_expanded_bytes(self, size):
        """Raise LimitExceededError if the argument ciphertexts would be too large."""
        self._check("max_expanded_bytes", size, "argument ciphertexts after mask expansion")


def _pack_packed(kind, values, batched, rows):
    """Bytes of a packed argument or result: one GLWE batch and the row count."""
    from fheml._core.glwe import GlweCiphertext
    from fheml._core.serialization import pack
    if len(values) != 1 or not isinstance(values[0], GlweCiphertext):
        raise TypeError("a packed call carries exactly one GlweCiphertext")
    header, arrays = values[0].to_parts()
    return pack(kind, {"packed": header, "rows": int(rows), "batched": bool(batched)}, arrays)


def _unpack_packed(kind, header, arrays, spec=None, key_id=None, limits=None):
    """``(values, batched, rows)`` of a packed argument or result; with ``spec`` (the server
    loading arguments) the layout, key id and limits are checked before anything is
    allocated for the batch."""
    from fheml._core.glwe import GlweCiphertext
    from fheml._core.serialization import MismatchError, check_int, peer_data
    with peer_data(kind):
        rows = check_int(header["rows"], "rows", 0, 2**40)
        glwe = header["packed"]
        max_words = None
        if spec is not None:
            plan = spec.packed
            if plan is None:
                raise MismatchError(f"{kind}: this circuit has no packed path")
            limits.check_rows(rows)
            shape = [plan.groups(rows), plan.chunks]
            if (glwe.get("glwe_dimension"), glwe.get("polynomial_size"), glwe.get("shape"),
                    glwe.get("coefficients"), glwe.get("carried"), glwe.get("word_bits")) != (
                        plan.glwe_dimension, plan.polynomial_size, shape,
                        list(plan.input_coefficients(rows)), plan.carried(rows),
                        plan.input_bits):
                raise MismatchError(f"{kind}: the packed argument does not have this "
                                    f"circuit's layout for {rows} rows")
            if key_id is not None and glwe.get("key_id") != key_id:
                raise MismatchError(f"{kind}: the packed argument was encrypted under other "
                                    "keys than the evaluation keys")
            max_words = math.prod(shape) * (plan.glwe_dimension + 1) * plan.polynomial_size
            limits.check_expanded_bytes(8 * max_words)
        ct = GlweCiphertext.from_parts(glwe, arrays, max_words=max_words)
        return [ct], _json_bool(header["batched"]), rows


# ---------------------------------------------------------------- client / server ------

class Client:
    """Key generation, encryption and decryption for one circuit.

    Parameters
    ----------
    spec : ClientSpec
    """

    def __init__(self, spec):
        self.spec = spec
        self.secret_keys = None
        self.evaluation_keys = None
        self._packed_key = None

    @classmethod
    def from_bytes(cls, data):
        """Client for the circuit described by :meth:`ClientSpec.to_bytes` output."""
        return cls(ClientSpec.from_bytes(data))

    def keygen(self, force=False, verbose=None):
        """Generate secret and evaluation keys (kept on the client until sent).

        Parameters
        ----------
        force : bool, default=False
            Regenerate even if keys exist.
        verbose : bool, optional
            Progress report (default: ``fheml.get_config()["verbose"]``, see
            :func:`fheml.set_config`).

        Returns
        -------
        EvaluationKeys
            The keys to send to the server (``.to_bytes()``).
        """
        from fheml._core import SecretKeys
        if self.secret_keys is None or force:
            self.secret_keys = SecretKeys.generate(self.spec.params)
            self.evaluation_keys = self.secret_keys.evaluation_keys(verbose=verbose)
            self._packed_key = None
        return self.evaluation_keys

    def packed_key(self):
        """The GLWE key of the packed path, or None without a packed path.

        Derived from the secret keys (:meth:`~fheml._core.SecretKeys.derived_glwe_key`):
        same key id, nothing more to store, and no evaluation key is needed; for a packed
        first layer, the key set's own GLWE key (its extracted ciphertexts are under the
        big key the bootstrap reads).
        """
        packed = self.spec.packed
        sk = self._keys()
        if packed is None:
            return None
        if self._packed_key is None or self._packed_key.key_id != sk.key_id:
            if isinstance(packed, FirstLayerPlan):  # extracts to LWE under the big key
                self._packed_key = sk.glwe_secret_key()
            else:
                p = packed.params
                self._packed_key = sk.derived_glwe_key(p.glwe_dimension, p.polynomial_size,
                                                       p.noise_std)
        return self._packed_key

    def uses_packing(self, rows):
        """Whether a call of ``rows`` rows goes through the packed path by default (cost
        model)."""
        packed = self.spec.packed
        return (packed is not None and rows > 0
                and packed.cheaper_than_lwe(rows, self.spec.params.big_lwe_dimension))

    def _keys(self):
        if self.secret_keys is None:
            raise RuntimeError("no keys yet: call client.keygen() first")
        return self.secret_keys

    def encrypt(self, *args, packing=None):
        """Encrypt the arguments (clear arguments are passed through).

        Each argument has the compiled sample shape or a leading batch axis (all the same).

        Parameters
        ----------
        *args : array-like
        packing : bool, optional
            Packed GLWE path (True) or one LWE ciphertext per value (False); default: the
            cheaper one for this batch (see :meth:`uses_packing`).

        Returns
        -------
        EncryptedArgs
        """
        sk = self._keys()
        arrays, batched = _check_args(self.spec.inputs, args)
        rows = arrays[0].shape[0] if arrays else 0
        if packing and self.spec.packed is None:
            raise ValueError("this circuit has no packed path (it is not an affine map of "
                             "one encrypted argument)")
        if packing is None:
            packing = self.uses_packing(rows)
        if packing:
            u = (arrays[0] - self.spec.inputs[0]["lo"]).reshape(rows, -1)
            return EncryptedArgs([self.spec.packed.encrypt(self.packed_key(), u)], batched, rows)
        values = []
        for spec, a in zip(self.spec.inputs, arrays):
            if spec["encrypted"]:
                values.append(sk.encrypt(a - spec["lo"],
                                         precision=spec.get("precision", self.spec.precision)))
            else:
                values.append(a)
        return EncryptedArgs(values, batched)

    def decrypt(self, result):
        """Decrypt a :class:`EncryptedResult` (or its bytes) to integer arrays.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray

        Raises
        ------
        fheml._core.SerializationError
            Result bytes that are malformed or do not match the circuit and the keys.
        """
        from fheml._core.serialization import MismatchError
        sk = self._keys()
        if isinstance(result, (bytes, bytearray, memoryview)):
            result = EncryptedResult.from_bytes(result)
            error = MismatchError
        else:
            error = ValueError
        if result.rows is not None:
            return self._decrypt_packed(result, error)
        if len(result.values) != len(self.spec.outputs):
            raise error(f"expected {len(self.spec.outputs)} output(s), got "
                        f"{len(result.values)}")
        for spec, ct in zip(self.spec.outputs, result.values):
            if ct.key_id != sk.key_id or ct.dimension != sk.big_key.shape[0] \
                    or ct.shape[1:] != tuple(spec["shape"]) or len(ct.shape) < 1 \
                    or (not result.batched and ct.shape[0] != 1):
                raise error("the result does not match the circuit's outputs or these keys")
        outs = []
        for spec, ct in zip(self.spec.outputs, result.values):
            P = spec.get("precision", self.spec.precision)
            mod = 1 << (P + 1)
            m = sk.decrypt(ct, precision=P)
            lo = spec["lo"]
            v = lo + np.mod(m - lo, mod)
            outs.append(v if result.batched else v[0])
        return tuple(outs) if self.spec.multiple_outputs else outs[0]

    def _decrypt_packed(self, result, error):
        from fheml._core.glwe import GlweCiphertext
        if self.spec.packed is None:
            raise error("this circuit has no packed path")
        if len(result.values) != 1 or not isinstance(result.values[0], GlweCiphertext):
            raise error("a packed result holds one GLWE ciphertext batch")
        try:
            m = self.spec.packed.decrypt(self.packed_key(), result.values[0], result.rows)
        except ValueError as exc:  # another key or layout
            raise error(str(exc)) from None
        mod = 1 << self.spec.precision  # every output spans fewer values (see PackedPlan)
        outs, start = [], 0
        for spec in self.spec.outputs:
            size = int(np.prod(spec["shape"], dtype=np.int64))
            v = m[:, start:start + size].reshape((result.rows, *spec["shape"]))
            v = spec["lo"] + np.mod(v - spec["lo"], mod)
            outs.append(v if result.batched else v[0])
            start += size
        return tuple(outs) if self.spec.multiple_outputs else outs[0]


class Server:
    """Runs a circuit on encrypted arguments with the client's evaluation keys.

    Everything it reads from bytes is validated before it costs work or memory: peer
    errors raise :class:`~fheml._core.SerializationError`, requests over a limit its
    subclass :class:`~fheml._core.LimitExceededError` (see :class:`ServerLimits`).

    Parameters
    ----------
    spec : ServerSpec
    limits : ServerLimits, optional
        Defaults to ``ServerLimits()``.
    """

    def __init__(self, spec, limits=None):
        if limits is not None and not isinstance(limits, ServerLimits):
            raise TypeError("limits must be a ServerLimits")
        self.spec = spec
        self.limits = ServerLimits() if limits is None else limits
        spec.program.assign_stages()

    @classmethod
    def from_bytes(cls, data, limits=None):
        """Server for the circuit described by :meth:`ServerSpec.to_bytes` output."""
        return cls(ServerSpec.from_bytes(data), limits)

    def to_bytes(self):
        return self.spec.to_bytes()

    def load_keys(self, data):
        """Evaluation keys from bytes, checked against the circuit's parameters before they
        are expanded.

        Raises
        ------
        fheml._core.SerializationError
        """
        from fheml._core import EvaluationKeys
        from fheml._core.serialization import LimitExceededError
        params = self.spec.params
        # The size is fixed by the parameters: refuse more before parsing anything.
        expected = params.seeded_bsk_bytes + params.seeded_ksk_bytes + _KEY_HEADER_SLACK
        if len(data) > expected:
            raise LimitExceededError("evaluation_key_bytes", len(data), expected,
                                     "the size this circuit's parameters imply")
        return EvaluationKeys.from_bytes(data, expected_params=params)

    def run(self, encrypted_args, evaluation_keys, n_jobs=1, verbose=None):
        """Evaluate the circuit.

        Parameters
        ----------
        encrypted_args : EncryptedArgs or bytes
            Bytes are checked against the circuit and the limits before any seeded mask
            is expanded.
        evaluation_keys : EvaluationKeys or bytes
        n_jobs : int, default=1
            Threads for the lookups (-1: all cores).
        verbose : bool, optional
            Progress report of the lookups (see :func:`fheml.set_config`).

        Returns
        -------
        EncryptedResult

        Raises
        ------
        fheml._core.SerializationError
            Bytes that are malformed or do not fit the circuit (``LimitExceededError``
            when over a limit).
        """
        from fheml._core import EvaluationKeys, LweCiphertext
        if isinstance(evaluation_keys, (bytes, bytearray, memoryview)):
            evaluation_keys = self.load_keys(evaluation_keys)
        if not isinstance(evaluation_keys, EvaluationKeys):
            raise TypeError("evaluation_keys must be EvaluationKeys (or their bytes)")
        if evaluation_keys.params != self.spec.params:
            raise ValueError("evaluation keys were made for other parameters than this circuit")
        if isinstance(encrypted_args, (bytes, bytearray, memoryview)):
            encrypted_args = EncryptedArgs.from_bytes(
                encrypted_args, spec=self.spec, key_id=evaluation_keys.key_id,
                limits=self.limits)
            if encrypted_args.rows is not None:
                return self._run_packed(encrypted_args, evaluation_keys, n_jobs, verbose)
            try:
                inputs = self._check_values(encrypted_args.values, evaluation_keys.key_id)
                outs = run_encrypted(self.spec.program, inputs, evaluation_keys,
                                     n_jobs=n_jobs, verbose=verbose)
            except (InputRangeError, TracingError) as exc:
                # clear values the peer sent outside what the circuit was compiled for
                from fheml._core.serialization import MismatchError
                raise MismatchError(f"circuit-args: {exc}") from None
        elif encrypted_args.rows is not None:
            return self._run_packed(encrypted_args, evaluation_keys, n_jobs, verbose)
        else:
            inputs = self._check_values(encrypted_args.values, evaluation_keys.key_id)
            outs = run_encrypted(self.spec.program, inputs, evaluation_keys, n_jobs=n_jobs,
                                 verbose=verbose)
        return EncryptedResult([LweCiphertext(o, evaluation_keys.key_id) for o in outs],
                               encrypted_args.batched)

    def _check_values(self, values, key_id):
        """Data arrays of in-memory arguments, checked against the circuit."""
        from fheml._core import LweCiphertext
        specs = self.spec.inputs
        if len(values) != len(specs):
            raise TypeError(f"the circuit takes {len(specs)} argument(s), got {len(values)}")
        dim = self.spec.params.big_lwe_dimension
        inputs = []
        batch = None
        for spec, v in zip(specs, values):
            shape = tuple(spec["shape"])
            if spec["encrypted"]:
                if not isinstance(v, LweCiphertext):
                    raise TypeError(f"argument {spec['name']!r} must be encrypted")
                if v.key_id != key_id:
                    raise ValueError(f"argument {spec['name']!r} was encrypted under other keys "
                                     "than the evaluation keys")
                if v.dimension != dim:
                    raise ValueError(f"argument {spec['name']!r} has ciphertext dimension "
                                     f"{v.dimension}, expected {dim}")
                data = v.data
            else:
                if isinstance(v, LweCiphertext):
                    raise TypeError(f"argument {spec['name']!r} is a clear argument")
                data = np.asarray(v)
            got = data.shape[1:len(shape) + 1] if spec["encrypted"] else data.shape[1:]
            if not spec["encrypted"] and tuple(got) == shape:
                _check_clear_range(spec, data)
            if data.ndim < 1 or tuple(got) != shape or (
                    spec["encrypted"] and data.ndim != len(shape) + 2):
                raise ValueError(f"argument {spec['name']!r} does not have the compiled shape "
                                 f"{shape} (after the batch axis)")
            if batch is not None and data.shape[0] != batch:
                raise ValueError("all arguments must have the same batch size")
            batch = data.shape[0]
            inputs.append(data)
        self.limits.check_rows(batch or 0)
        return inputs

    def _run_packed(self, encrypted_args, evaluation_keys, n_jobs=1, verbose=None):
        from fheml._core import LweCiphertext
        from fheml._core.glwe import GlweCiphertext
        packed = self.spec.packed
        if packed is None:
            raise ValueError("this circuit has no packed path: send one LWE batch per argument")
        values = encrypted_args.values
        if len(values) != 1 or not isinstance(values[0], GlweCiphertext):
            raise TypeError("a packed call carries exactly one GlweCiphertext")
        ct = values[0]
        if ct.key_id != evaluation_keys.key_id:
            raise ValueError("the packed argument was encrypted under other keys than the "
                             "evaluation keys")
        if len(ct.shape) != 2 or ct.shape[0] != packed.groups(encrypted_args.rows):
            raise ValueError(f"the packed argument holds {ct.shape[0] if ct.shape else 0} "
                             f"groups; {encrypted_args.rows} rows need "
                             f"{packed.groups(encrypted_args.rows)}")
        self.limits.check_rows(encrypted_args.rows)
        if isinstance(packed, FirstLayerPlan):
            outs = run_encrypted(self.spec.program, [None], evaluation_keys, n_jobs=n_jobs,
                                 verbose=verbose, precomputed=packed.evaluate(
                                     ct, encrypted_args.rows), skip=packed.prefix)
            return EncryptedResult([LweCiphertext(o, evaluation_keys.key_id) for o in outs],
                                   encrypted_args.batched)
        return EncryptedResult([packed.evaluate(ct, encrypted_args.rows)],
                               encrypted_args.batched, encrypted_args.rows)


# Serialized evaluation keys are their bodies plus a JSON header of a few hundred bytes.
_KEY_HEADER_SLACK = 1 << 16


# ------------------------------------------------------------------------ circuit ------

def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


class Circuit:
    """A compiled program: run it in the clear, in simulation or encrypted.

    Create with :func:`fheml.compile` or ``@fheml.compiler(...)`` + ``.compile(inputset)``.

    Attributes
    ----------
    graph : Graph
        The traced op-graph, with bounds (``circuit.graph.format()``).
    program : Program
        The lowered program the server runs.
    parameters : fheml._core.ParameterSet
    max_bit_width : int
        Encoding precision: bits of the widest value that must be exact (lookup inputs,
        encrypted inputs and outputs).
    statistics : dict
        ``lookups`` (per sample), ``lookups_by_precision``, ``levels``, ``precision``,
        ``lookup_precision``, ``estimated_cost``, ``p_error``, ``global_p_error``,
        ``key_sizes``, ``packing`` (layout of the packed path, or None).
    client : Client
    server : Server
    """

    def __init__(self, graph, program, params, p_error, input_specs, output_specs, n_jobs=1,
                 verbose=None):
        self.graph = graph
        self.verbose = verbose
        self.program = program
        self.parameters = params
        self.p_error = p_error
        self.n_jobs = n_jobs
        for spec, k in zip(output_specs, program.output_nodes):
            spec.setdefault("precision", program.nodes[k].precision)
        multiple = bool(getattr(graph, "multiple_outputs", False))
        packed = None
        if len(input_specs) == 1 and input_specs[0]["encrypted"]:
            packed = plan_first_layer(program, params) if params.has_bootstrap else \
                plan_packing(program, p_error, input_specs[0]["hi"] - input_specs[0]["lo"])
        # In-process: the arguments come from this process, no limit applies.
        self.server = Server(ServerSpec(params, program, input_specs, output_specs, multiple,
                                        packed), ServerLimits(None, None, None))
        self.client = Client(ClientSpec(params, program.precision, input_specs, output_specs,
                                        multiple, packed and packed_plan_from_dict(
                                            packed.to_dict(), params)))
        self.statistics = statistics(program, params, p_error)
        self.statistics["packing"] = None if packed is None else {
            "polynomial_size": packed.polynomial_size, "rows_per_ciphertext": packed.slots,
            "ciphertexts_per_row": packed.chunks, "upload_bits_per_word": packed.input_bits,
            "first_layer": isinstance(packed, FirstLayerPlan)}
        if isinstance(packed, PackedPlan):
            self.statistics["packing"].update(weight_digits=packed.digits,
                                              result_bits_per_word=packed.params.output_bits)
        self._simulation_noise = simulation_noise(program, params)

    @property
    def max_bit_width(self):
        return self.program.precision

    def __repr__(self):
        s = self.statistics
        return (f"Circuit({len(self.client.spec.inputs)} input(s), {s['lookups']} lookup(s) in "
                f"{s['levels']} level(s), {self.max_bit_width} bits, {self.parameters})")

    def _outputs(self, outs, batched):
        outs = [o if batched else o[0] for o in outs]
        return tuple(outs) if self.client.spec.multiple_outputs else outs[0]

    def run(self, *args, fhe="disable"):
        """Evaluate the circuit.

        Parameters
        ----------
        *args : array-like
            One per argument, of the compiled shape or with a leading batch axis.
        fhe : {"disable", "simulate", "execute"}, default="disable"
            In the clear with the exact integer semantics of the encrypted circuit, in the
            clear with modelled lookup failures, or encrypted (keys generated on first use).
        """
        if fhe == "simulate":
            return self.simulate(*args)
        if fhe == "execute":
            return self.encrypt_run_decrypt(*args)
        if fhe != "disable":
            raise ValueError(f"fhe must be 'disable', 'simulate' or 'execute', got {fhe!r}")
        arrays, batched = _check_args(self.client.spec.inputs, args)
        return self._outputs(self._run_clear(arrays, ClearBackend()), batched)

    def _run_clear(self, arrays, backend):
        outs = run_clear(self.program, arrays, backend)
        checked = []
        for spec, k, o in zip(self.client.spec.outputs, self.program.output_nodes, outs):
            lo, mod = spec["lo"], 1 << (self.program.nodes[k].precision + 1)
            if o.size and (o.min() < lo or o.max() >= lo + mod):
                raise InputRangeError(
                    f"the output computed at {self.program.nodes[k].where} reached values "
                    f"outside the range the circuit can represent ([{lo}, {lo + mod - 1}]); "
                    "compile with an inputset covering the values you run on")
            checked.append(o)
        return checked

    def simulate(self, *args, seed=None):
        """Evaluate in the clear, each lookup reading a neighbouring table entry with the
        probability its modelled noise gives at its input: the lookup's failure probability
        (``parameters.p_fail`` at its precision and ν), and for a lookup reading through
        :func:`fheml.round_bit_pattern` the approximate encrypted rounding (a value near a
        rounding tie may round either way).

        Parameters
        ----------
        seed : int, optional
            Seed of the noise draws (``None``: fresh entropy).
        """
        arrays, batched = _check_args(self.client.spec.inputs, args)
        backend = ClearBackend(np.random.default_rng(seed), self._simulation_noise)
        return self._outputs(self._run_clear(arrays, backend), batched)

    def keygen(self, force=False, verbose=None):
        """Generate the client's keys (see :meth:`Client.keygen`)."""
        return self.client.keygen(force=force, verbose=self._verbose(verbose))

    def _verbose(self, verbose):
        return self.verbose if verbose is None else verbose

    def encrypt_run_decrypt(self, *args, verbose=None, batch_size=None):
        """Encrypt on the client, run on the server, decrypt on the client.

        A batch is encrypted, run and decrypted in chunks of rows, so that memory stays
        bounded whatever the batch size, with the same results.

        Parameters
        ----------
        *args : array-like
            As for :meth:`run`.
        verbose : bool, optional
            Progress of key generation (first call) and of the run; default
            ``fheml.get_config()["verbose"]`` (see :func:`fheml.set_config`).
        batch_size : int, optional
            Rows per chunk; by default as many as fit in
            ``fheml.get_config()["working_memory"]`` MB (see :meth:`rows_per_chunk`).
        """
        verbose = self._verbose(verbose)
        arrays, batched = _check_args(self.client.spec.inputs, args)
        rows = arrays[0].shape[0]
        size = self.rows_per_chunk() if batch_size is None else _check_batch_size(batch_size)
        ek = self.client.keygen(verbose=verbose)
        if rows <= size:
            return self._encrypt_run_decrypt(arrays, batched, ek, verbose)
        chunks = []
        with progress(rows, "Encrypted run", unit="row", verbose=verbose) as bar:
            for start in range(0, rows, size):
                part = [a[start:start + size] for a in arrays]
                out = self._encrypt_run_decrypt(part, True, ek, False)
                chunks.append(out if isinstance(out, tuple) else (out,))
                bar.update(part[0].shape[0])
        outs = tuple(np.concatenate(parts) for parts in zip(*chunks))
        return outs if self.client.spec.multiple_outputs else outs[0]

    def _encrypt_run_decrypt(self, arrays, batched, ek, verbose):
        # arrays are checked and batched: encrypt them as one batch of the caller's form
        encrypted = self.client.encrypt(*(arrays if batched else [a[0] for a in arrays]))
        result = self.server.run(encrypted, ek, n_jobs=self.n_jobs, verbose=verbose)
        return self.client.decrypt(result)

    def bytes_per_row(self, packed=False):
        """Estimated peak memory of one row (sample) of an encrypted run, in bytes: every
        encrypted value of the program as LWE ciphertexts, twice (temporaries); with
        ``packed``, a row's share of the packed path's GLWE ciphertexts
        (:meth:`~fheml.compiler.packed.PackedPlan.bytes_per_row`)."""
        if packed:
            return self.client.spec.packed.bytes_per_row()
        words = self.parameters.big_lwe_dimension + 1
        values = sum(int(np.prod(n.shape, dtype=np.int64)) for n in self.program.nodes
                     if n.encrypted)
        return 2 * 8 * words * max(1, values)

    def rows_per_chunk(self):
        """Rows of a batch encrypted and run together: as many as fit in
        ``fheml.get_config()["working_memory"]`` MB (at least one), on the packed path
        (whole ciphertexts of rows) when a chunk of that size takes it.

        Returns
        -------
        int
        """
        from fheml._config import get_config
        budget = get_config()["working_memory"] * 2 ** 20
        rows = max(1, int(budget // self.bytes_per_row()))
        plan = self.client.spec.packed
        if isinstance(plan, PackedPlan):
            packed = int(budget // self.bytes_per_row(packed=True)) // plan.slots * plan.slots
            if packed > rows and self.client.uses_packing(packed):
                return packed
        return rows
