// The service of the live Thrift tests (tests/services/start-thrift.sh).
namespace py calc

exception Oops {
  1: i32 code,
  2: string why
}

struct Point {
  1: i32 x,
  2: i32 y
}

service Calc {
  void ping(),
  i32 add(1: i32 a, 2: i32 b),
  string echo(1: string s),
  list<Point> points(1: i32 n),
  i32 divide(1: i32 a, 2: i32 b) throws (1: Oops oops),
  oneway void note(1: string text)
}
