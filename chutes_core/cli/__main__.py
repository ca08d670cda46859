from chutes_core.cli import main

main()
