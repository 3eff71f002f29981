"""Tests of how bench/peers-report.py decides the issue-10 targets (run by scripts/test.sh:
`python3 -m unittest discover -s bench -p 'test_*.py'`)."""
import importlib.util
import math
import unittest
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "peers_report", Path(__file__).with_name("peers-report.py"))
pr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pr)


def case(cpu, pairs=None, p99=2.0, corun=None):
    """A case as `load` builds it: rounds of CPU time `cpu` (list), paired runs `pairs`
    (CPU µs per pair), co-run ratios `corun`."""
    m = {"cpu_us": sorted(cpu)[len(cpu) // 2], "cpu_min": min(cpu), "cpu_max": max(cpu),
         "rounds": len(cpu), "p99": p99, "p99_spread": 0.1, "rps": 1000, "rps_max": 1000}
    if pairs is not None:
        m["pairs"] = {i + 1: {"cpu_us": v, "p99": p99} for i, v in enumerate(pairs)}
    if corun is not None:
        m["corun"] = corun
    return m


def decided(med, prefix):
    return next(ok for name, ok, _ in pr.targets(med) if name.startswith(prefix))


class MedianInterval(unittest.TestCase):
    def test_order_statistics_of_the_sign_test(self):
        # n = 20: P(Binomial(20, 1/2) <= 5) = 0.0207, <= 6 = 0.0577: the 6th smallest and
        # the 6th largest.
        xs = list(range(1, 21))
        m, ci = pr.median_ci(reversed(xs))
        self.assertEqual(m, 10.5)
        self.assertEqual(ci, (6, 15))
        # The coverage is at least 95% for every n that has an interval.
        for n in range(6, 60):
            _, (lo, hi) = pr.median_ci(range(n))
            k = lo + 1
            self.assertEqual(hi, n - k)
            tail = sum(math.comb(n, i) for i in range(k)) / 2 ** n
            self.assertLessEqual(2 * tail, 0.05)
            self.assertGreater(2 * (tail + math.comb(n, k) / 2 ** n), 0.05)

    def test_too_few_values_have_no_interval(self):
        self.assertEqual(pr.median_ci([1, 2, 3, 4, 5]), (3, None))
        self.assertIsNotNone(pr.median_ci([1, 2, 3, 4, 5, 6])[1])


class Targets(unittest.TestCase):
    BARE_PAIRS = [50, 70, 60, 90, 55, 65, 80, 75, 52, 68, 61, 73]

    def full_chain(self, ratio, jitter=0.0):
        pairs = [b * ratio * (1 + (jitter if i % 2 else -jitter))
                 for i, b in enumerate(self.BARE_PAIRS)]
        return {"bare": case([50, 90], self.BARE_PAIRS), "tg-full": case([70, 120], pairs)}

    def test_pairs_decide_a_pass_a_miss_or_nothing(self):
        name = "full chain"
        self.assertIs(decided(self.full_chain(1.20, 0.02), name), True)
        self.assertIs(decided(self.full_chain(1.45, 0.02), name), False)
        # Pairs whose ratios straddle 1.30 decide nothing.
        self.assertIsNone(decided(self.full_chain(1.30, 0.10), name))

    def test_without_pairs_a_spread_larger_than_the_margin_decides_nothing(self):
        med = {"bare": case([50, 90]), "tg-full": case([60, 100])}
        self.assertIsNone(decided(med, "full chain"))
        med = {"bare": case([50, 51]), "tg-full": case([60, 61])}
        self.assertIs(decided(med, "full chain"), True)

    def test_cycles_over_the_target_miss_it_whatever_the_pairs(self):
        med = self.full_chain(1.20, 0.02)
        med["bare"]["cycles"], med["tg-full"]["cycles"] = 50e3, 70e3
        self.assertIs(decided(med, "full chain"), False)

    def test_co_runs_are_reported_but_do_not_decide(self):
        med = self.full_chain(1.30, 0.10)
        med["tg-full"]["corun"] = [1.10] * 12
        (_, ok, detail), = [t for t in pr.targets(med) if t[0].startswith("full chain")]
        self.assertIsNone(ok)
        self.assertIn("co-runs with the bare proxy (not deciding): 1.10×", detail)

    def test_p99_pairs_decide_against_one_millisecond(self):
        bare = case([50, 51], self.BARE_PAIRS)
        slow = case([60, 61], self.BARE_PAIRS)
        for i, p in bare["pairs"].items():
            slow["pairs"][i]["p99"] = p["p99"] + 1.5 + 0.1 * (i % 3)
        med = {"bare": bare, "tg-pass": slow}
        self.assertIs(decided(med, "p99 at the fixed rate within 1 ms of bare Pingora (pass"),
                      False)


class Header(unittest.TestCase):
    def test_the_cargo_profile_is_named_unless_it_is_release(self):
        self.assertEqual(pr.built_with({}), "")
        self.assertEqual(pr.built_with({"build_profile": "release"}), "")
        self.assertIn("`production`", pr.built_with({"build_profile": "production"}))


if __name__ == "__main__":
    unittest.main()
