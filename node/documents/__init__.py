"""Off-chain documents (DESIGN §4): canonical JSON, the TaskSpec and the ResultManifest.

Modules:
- ``canonical``  canonical JSON bytes and the hashes taken over them (sha256, keccak256)
- ``spec``       :class:`TaskSpec`, what a client asks for; its sha256 goes on chain as ``specHash``
- ``manifest``   :class:`ResultManifest`, what a group delivers;
                 ``resultRoot = keccak256(canonical)``

Every document is a frozen pydantic model. A document that came from outside is parsed
with :func:`parse_checked`, which verifies the hash before the content is used.
"""
