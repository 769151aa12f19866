fn main() -> std::process::ExitCode {
    psk::cli::main()
}
