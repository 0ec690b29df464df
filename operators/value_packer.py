"""Small values (a catalog item's JSON) packed one at a time with DEFLATE against a shared dictionary.

A table that holds 1M catalog items as their JSON bytes (``TopicTable(keep_raw=True)``, the API's
catalog) spent ~350 B per item on them: ~315 B of JSON, a third of it a vector's digits, and the
``bytes`` object. Compressed alone, a 300 B value hardly shrinks: DEFLATE has no history to match
against. Against a preset dictionary (zlib's ``zdict``) made of the first values seen, the keys,
the common values and the number formats all match, and the value shrinks to ~40 % (132 B at
level 1 for the bench's scaled-shop items; bench/RESULTS.md, "Memory per API worker at 1M items"). Each value stays packed apart, so
one value is unpacked (~3 µs) without touching the others, and replacing a value packs only it.

The dictionary is learned once, from the first ``learn_values`` values, and never changes, so every
packed value stays readable. A packed value starts with a tag byte: ``\\x00`` DEFLATE against the
dictionary, ``\\x01`` the value as given (values seen before the dictionary was learned, and those
packing does not shrink).
"""

from __future__ import annotations

import zlib

__all__ = ["ValuePacker"]

_DEFLATED = b"\x00"
_PLAIN = b"\x01"
_WBITS = -12  # raw DEFLATE (no header, no checksum), a 4 KB window: the dictionary and one value fit
_MEM_LEVEL = 4  # a small hash table: values are short; copying the primed compressor stays cheap


class ValuePacker:
    """``pack(value) -> bytes`` and its inverse ``unpack``, for many short values alike in form.

    Parameters
    ----------
    learn_values : int
        Values kept as given until the dictionary is learned from them (their concatenation's last
        ``dictionary_bytes``: zlib matches nearer strings more cheaply).
    dictionary_bytes : int
        Size of the dictionary, at most 4096 (the window).
    level : int
        zlib level: 1 packs a 315 B item in ~10 µs to ~132 B; 6 to ~123 B in ~14 µs.

    Notes
    -----
    ``pack`` is called by one thread (a table's reader); ``unpack`` by any, at any time: the
    dictionary is set before the first value packed against it is returned.

    Examples
    --------
    >>> p = ValuePacker(learn_values=2)
    >>> [p.unpack(p.pack(b'{"price": %d}' % i)) for i in range(4)]
    [b'{"price": 0}', b'{"price": 1}', b'{"price": 2}', b'{"price": 3}']
    """

    def __init__(self, learn_values: int = 64, dictionary_bytes: int = 4096, level: int = 1) -> None:
        if not 0 < dictionary_bytes <= 1 << -_WBITS:
            raise ValueError(f"dictionary_bytes must be in 1..{1 << -_WBITS}; got {dictionary_bytes}")
        self.learn_values, self.dictionary_bytes, self.level = learn_values, dictionary_bytes, level
        self._samples: list[bytes] = []
        self._dictionary: bytes | None = None
        self._compressor: zlib._Compress | None = None  # primed with the dictionary; copied per value

    @property
    def dictionary(self) -> bytes | None:
        """The learned dictionary (None until ``learn_values`` values were packed)."""
        return self._dictionary

    def pack(self, value: bytes) -> bytes:
        """``value`` packed (a new ``bytes``: the tag byte, then DEFLATE or the value as given)."""
        compressor = self._compressor
        if compressor is None:
            self._learn(value)
            return _PLAIN + value
        c = compressor.copy()  # the primed state: the dictionary is not hashed again per value
        packed = c.compress(value) + c.flush()
        return _DEFLATED + packed if len(packed) < len(value) else _PLAIN + value

    def unpack(self, packed: bytes) -> bytes:
        """The value ``pack`` was given.

        Raises
        ------
        ValueError
            If ``packed`` was not made by this packer (an unknown tag, or DEFLATE data that is not
            complete against this dictionary).
        """
        tag = packed[:1]
        if tag == _PLAIN:
            return packed[1:]
        if tag != _DEFLATED or self._dictionary is None:
            raise ValueError(f"not a packed value (tag {tag!r})")
        d = zlib.decompressobj(_WBITS, zdict=self._dictionary)
        value = d.decompress(packed[1:])
        if not d.eof:
            raise ValueError("packed value truncated")
        return value

    def _learn(self, value: bytes) -> None:
        """Keep ``value`` as a sample; with ``learn_values`` of them, fix the dictionary."""
        self._samples.append(value)
        if len(self._samples) < self.learn_values:
            return
        dictionary = b"".join(self._samples)[-self.dictionary_bytes:]
        self._samples = []
        self._dictionary = dictionary
        self._compressor = zlib.compressobj(self.level, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY,
                                            zdict=dictionary)
