"""The evaluators an `evals` entry can name; each implements cliplab.eval.evaluator.Evaluator."""
