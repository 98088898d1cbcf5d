"""Photos vitrine makes to measure itself with: merchant-like (`photos`), studio
(`studio`), none of our categories (`foreign`), re-published copies (`republish`) and
listing-quality faults (`quality_set`)."""
