from vesalius.cli.main import main

main()
