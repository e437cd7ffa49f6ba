fn main() {
    reid_torch_link::emit();
}
