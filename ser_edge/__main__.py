from ser_edge.cli import main

main()
