fn main() {
    let device = tch::Device::cuda_if_available();
    let x = tch::Tensor::arange(6, (tch::Kind::Float, device)).view([2, 3]);
    println!("device {device:?}, sum {}", x.sum(tch::Kind::Float).double_value(&[]));
}
