"""Public entry points: ``@fheml.compiler``, :func:`compile` and :func:`check`."""

import inspect
import logging
import warnings

import numpy as np

from fheml.compiler.circuit import Circuit, finalize
from fheml.compiler.graph import TracingError, range_bits
from fheml.compiler.lowering import MAX_LOOKUP_BITS, lower
from fheml.compiler.tracing import trace
from fheml._core import select_parameters
from fheml._warnings import FHEMLPerformanceWarning, user_stacklevel

__all__ = ["CheckReport", "Compiler", "check", "compile", "compiler"]

_STATUSES = ("encrypted", "clear")

WIDE_LOOKUP_BITS = 7
"""Lookups reading this many bits or more draw a :class:`FHEMLPerformanceWarning`."""

def _arg_names(fn, count=None):
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params) and count is not None:
        names = names + [f"arg{i}" for i in range(len(names), count)]
    return names


def _stack_inputset(inputset, names):
    """List of samples -> one array ``(n, *shape)`` per argument."""
    if isinstance(inputset, np.ndarray) and len(names) == 1:
        samples = [(s,) for s in inputset]
    else:
        samples = []
        for s in inputset:
            if not isinstance(s, tuple):
                s = (s,)
            samples.append(s)
    if not samples:
        raise ValueError("the inputset is empty; give a few representative samples")
    columns = []
    for i, name in enumerate(names):
        values = []
        for j, s in enumerate(samples):
            if len(s) != len(names):
                raise ValueError(f"inputset sample {j} has {len(s)} value(s); the function takes "
                                 f"{len(names)} ({', '.join(names)})")
            values.append(np.asarray(s[i]))
        shapes = {v.shape for v in values}
        if len(shapes) != 1:
            raise ValueError(f"inputset values of argument {name!r} have different shapes "
                             f"{sorted(shapes)}; all samples must have the same shape")
        column = np.stack(values)
        if column.dtype == bool:
            column = column.astype(np.int64)
        columns.append(column)
    return columns


class CheckReport:
    """Bit widths of a program on an inputset, without choosing parameters.

    Attributes
    ----------
    graph : Graph
        With bounds on every node; ``graph.format()`` lists them.
    max_bit_width : int
        Bits of the widest value that must be exact.
    lookups : list of dict
        ``{"where", "bits", "shift", "shape"}`` per lookup.
    error : str or None
        Why the program would not compile (too-wide lookup, ...), if it would not.
    """

    def __init__(self, graph, program, error):
        self.graph = graph
        self.program = program
        self.error = error
        self.lookups = []
        self.max_bit_width = None
        if program is not None:
            for n in program.lookups:
                bits = max(1, (n.attrs["tables"].shape[1] - 1).bit_length())
                self.lookups.append({"where": n.where, "bits": bits, "shift": n.attrs["shift"],
                                     "shape": n.shape})
            widths = [lk["bits"] + lk["shift"] for lk in self.lookups]
            widths += [range_bits(*program.nodes[k].safe_bounds) for k in program.output_nodes]
            widths += [range_bits(*program.nodes[k].bounds) for k in program.input_nodes
                       if program.nodes[k].encrypted]
            self.max_bit_width = max(widths)

    @property
    def ok(self):
        return self.error is None

    def format(self):
        lines = [self.graph.format(), ""]
        for lk in self.lookups:
            extra = f" (top bits of a {lk['bits'] + lk['shift']}-bit value)" if lk["shift"] else ""
            lines.append(f"lookup {lk['bits']} bits{extra} x {int(np.prod(lk['shape']))} "
                         f"at {lk['where']}")
        if self.max_bit_width is not None:
            lines.append(f"max bit width: {self.max_bit_width} (lookups up to "
                         f"{MAX_LOOKUP_BITS} bits)")
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)

    __str__ = format


class Compiler:
    """A function with the encryption status of its arguments, ready to compile.

    Parameters
    ----------
    fn : callable
    parameters : dict of str to {"encrypted", "clear"}
        Status of every argument of ``fn``.
    """

    def __init__(self, fn, parameters):
        self.fn = fn
        names = _arg_names(fn)
        if not isinstance(parameters, dict):
            raise TypeError('parameters must be a dict such as {"x": "encrypted"}')
        unknown = set(parameters) - set(names)
        missing = [n for n in names if n not in parameters]
        if unknown or missing:
            raise ValueError(f"parameters must give the status of every argument of "
                             f"{getattr(fn, '__name__', 'the function')} ({', '.join(names)}); "
                             f"missing {missing}, unknown {sorted(unknown)}")
        for name, status in parameters.items():
            if status not in _STATUSES:
                raise ValueError(f"status of {name!r} must be 'encrypted' or 'clear', got "
                                 f"{status!r}")
        self.arg_names = names
        self.encrypted = [parameters[n] == "encrypted" for n in names]
        self.__name__ = getattr(fn, "__name__", "circuit")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def _columns(self, inputset):
        columns = _stack_inputset(inputset, self.arg_names)
        for name, enc, col in zip(self.arg_names, self.encrypted, columns):
            if enc and not np.issubdtype(col.dtype, np.integer):
                raise TypeError(f"inputset values of encrypted argument {name!r} must be "
                                f"integers, got {col.dtype} (quantize first)")
        return columns

    def trace(self, inputset):
        """Trace on the shapes of the inputset and lower; returns ``(graph, program, columns)``."""
        columns = self._columns(inputset)
        graph = trace(self.fn, self.arg_names, self.encrypted, [c[0] for c in columns])
        program = lower(graph, columns)
        return graph, program, columns

    def check(self, inputset):
        """Bit widths on the inputset without choosing parameters (see :func:`check`)."""
        columns = self._columns(inputset)
        graph = trace(self.fn, self.arg_names, self.encrypted, [c[0] for c in columns])
        try:
            program = lower(graph, columns)
        except TracingError as exc:
            from fheml.compiler.lowering import evaluate_graph
            evaluate_graph(graph, columns)
            return CheckReport(graph, None, str(exc))
        report = CheckReport(graph, program, None)
        if max((lk["bits"] for lk in report.lookups), default=0) > MAX_LOOKUP_BITS:
            report.error = "a lookup is wider than the engine supports"
        return report

    def compile(self, inputset, p_error=None, global_p_error=None, n_jobs=1, verbose=None):
        """Trace, fuse, bound, choose parameters.

        Parameters
        ----------
        inputset : iterable
            Representative samples: one value per sample for a single argument, a tuple of
            values per sample otherwise (or, for one argument, an array whose first axis
            lists the samples).  Bounds, hence bit widths, come from it.
        p_error : float, optional
            Failure probability of each lookup (default ``2**-40``).
        global_p_error : float, optional
            Failure probability of the whole circuit (split over its lookups); with
            ``p_error`` too, the stricter applies.
        n_jobs : int, default=1
            Threads for the lookups when running encrypted (-1: all cores).
        verbose : bool, optional
            Log the graph and the statistics (``logging``, logger ``"fheml"``, INFO) and
            report the progress of key generation and encrypted runs of this circuit
            (default: ``fheml.get_config()["verbose"]``).

        Returns
        -------
        Circuit

        Warns
        -----
        FHEMLPerformanceWarning
            For each lookup reading 7 or 8 bits: its source line, key size and estimated
            time per lookup.
        """
        graph, program, columns = self.trace(inputset)
        input_specs = []
        for name, enc, col in zip(self.arg_names, self.encrypted, columns):
            spec = {"name": name, "encrypted": enc, "shape": list(col.shape[1:])}
            if enc:
                spec["lo"], spec["hi"] = int(col.min()), int(col.max())
            elif col.size:
                # elementwise envelope of a clear runtime argument: bounds and noise hold
                # for any value inside it, and calls are checked against it
                c = col.astype(np.int64) if col.dtype == bool else col
                spec["clear_lo"], spec["clear_hi"] = c.min(axis=0).tolist(), c.max(axis=0).tolist()
            input_specs.append(spec)
        params, per_lookup = finalize(program, input_specs, p_error, global_p_error)
        output_specs = [{"shape": list(program.nodes[k].shape), "lo": program.nodes[k].safe_bounds[0],
                         "precision": program.nodes[k].precision} for k in program.output_nodes]
        circuit = Circuit(graph, program, params, per_lookup, input_specs, output_specs, n_jobs,
                          verbose=verbose)
        _warn_wide_lookups(circuit)
        if verbose:
            logging.getLogger("fheml").info("compiled %s\n%s\n%s", self.__name__,
                                            graph.format(), circuit.statistics)
        return circuit


def _warn_wide_lookups(circuit):
    """One :class:`FHEMLPerformanceWarning` per source line holding a wide lookup."""
    params = circuit.parameters
    lines = {}
    for node in circuit.program.lookups:
        bits = node.attrs["index_bits"]
        if bits >= WIDE_LOOKUP_BITS:
            count = int(np.prod(node.shape, dtype=np.int64))
            seen = lines.setdefault(node.where or "<unknown>", [0, 0])
            seen[0] = max(seen[0], bits)
            seen[1] += count
    if not lines:
        return
    keys_mb = (params.bsk_bytes + params.ksk_bytes) / 1e6
    # the selection's measured time model (one thread, one lookup: keyswitch + bootstrap)
    ms = params.time_estimate * 1e3
    four_bit_ms = select_parameters(4, params.p_error).time_estimate * 1e3
    for where, (bits, count) in lines.items():
        warnings.warn(
            f"the lookup at {where} reads {bits}-bit values ({count} lookup(s) per sample): "
            f"this circuit needs {params.precision}-bit parameters, {keys_mb:.0f} MB of "
            f"evaluation keys and about {ms:.0f} ms per lookup on one core (a 4-bit lookup "
            f"at the same p_error: about {four_bit_ms:.0f} ms). Read fewer bits with "
            "fheml.round_bit_pattern, or lower the bit width of the values feeding it.",
            FHEMLPerformanceWarning, stacklevel=user_stacklevel())


def compiler(parameters):
    """Decorator marking the arguments of a function as encrypted or clear.

    Parameters
    ----------
    parameters : dict of str to {"encrypted", "clear"}

    Returns
    -------
    callable
        Decorator returning a :class:`Compiler` (callable like the function, with
        ``.compile(inputset, ...)`` and ``.check(inputset)``).

    Examples
    --------
    >>> import fheml
    >>> @fheml.compiler({"x": "encrypted"})
    ... def f(x):
    ...     return (x * 3 + 1) % 7
    >>> circuit = f.compile(range(8))
    >>> int(circuit.run(5))
    2
    """
    def decorate(fn):
        return Compiler(fn, parameters)
    return decorate


def _default_compiler(fn, parameters, inputset):
    if isinstance(fn, Compiler):
        return fn
    if parameters is None:
        names = _arg_names(fn)
        parameters = {n: "encrypted" for n in names}
    return Compiler(fn, parameters)


def compile(fn, inputset, parameters=None, p_error=None, global_p_error=None, n_jobs=1,
            verbose=None):
    """Compile a numpy function to a :class:`Circuit`.

    Parameters
    ----------
    fn : callable or Compiler
    inputset : iterable
        See :meth:`Compiler.compile`.
    parameters : dict, optional
        Status of each argument; default: all encrypted.
    p_error, global_p_error, n_jobs, verbose
        See :meth:`Compiler.compile`.

    Returns
    -------
    Circuit
    """
    return _default_compiler(fn, parameters, inputset).compile(
        inputset, p_error=p_error, global_p_error=global_p_error, n_jobs=n_jobs,
        verbose=verbose)


def check(fn, inputset, parameters=None):
    """Trace ``fn`` and report bit widths on the inputset without compiling.

    Returns
    -------
    CheckReport
        ``report.max_bit_width``, ``report.lookups``, ``report.error`` and ``print(report)``.
    """
    return _default_compiler(fn, parameters, inputset).check(inputset)
