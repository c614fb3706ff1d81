from deceptwatch.cli import main

main()
