select 1 as answer
