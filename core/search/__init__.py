"""Budgeted search over per-layer settings (light to import; see slimline.core.search.run)."""
from slimline.core.search.models import Candidate, SearchResult, SearchSettings

__all__ = ["Candidate", "SearchResult", "SearchSettings"]
