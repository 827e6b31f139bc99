"""Suite-wide test settings.

Hypothesis: no example database (runs stay reproducible from the printed seed/blob alone and
leave nothing behind in the checkout) and no per-example deadline (a shared 2-core CI box makes
wall-clock deadlines flaky; the per-test pytest timeout still bounds every test).
"""

from hypothesis import settings

settings.register_profile("medledger", database=None, deadline=None, print_blob=True)
settings.load_profile("medledger")
