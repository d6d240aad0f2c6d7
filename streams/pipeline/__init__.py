"""Stage hosting: the embedded runner, the faust-streaming app, the stages and the derivation shell."""
