#[derive(Clone, PartialEq)]
struct Point {
    x: f64,
    y: f64,
}

#[larder::memoize]
fn norm(p: Point, scale: u32) -> u64 {
    ((p.x * p.x + p.y * p.y).sqrt() * f64::from(scale)) as u64
}

fn main() {}
