"""The Calc service's answers (tests/data/thrift/calc.thrift), shared by the live Thrift
server of the tests and the capture generator of perf/. Import it after the directory of
the code `thrift --gen py` generated is on sys.path."""
from calc.ttypes import Oops, Point


class Handler:
    def ping(self):
        pass

    def add(self, a, b):
        return a + b

    def echo(self, s):
        return s

    def points(self, n):
        return [Point(x=i, y=-i) for i in range(n)]

    def divide(self, a, b):
        if b == 0:
            raise Oops(code=1, why="divide by zero")
        return a // b

    def note(self, text):
        pass
