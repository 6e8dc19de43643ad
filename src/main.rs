use clap::Parser;

fn main() -> std::process::ExitCode {
    llmctr::cli::tune_allocator();
    let cli = llmctr::cli::Cli::parse();
    llmctr::cli::init_logging(cli.verbose, cli.quiet);
    match llmctr::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
