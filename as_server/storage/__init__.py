"""Storage for the authorization server: Protocols in :mod:`.base`, backends in :mod:`.memory` and
:mod:`.sqlalchemy`."""
