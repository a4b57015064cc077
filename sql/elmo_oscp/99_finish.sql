-- Last: wake the worker at commit of CREATE EXTENSION.
SELECT _elmo_kick();
