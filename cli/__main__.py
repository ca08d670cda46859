from chutes_cli import main

main()
